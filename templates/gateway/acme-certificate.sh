#!/bin/sh
# Run by gpuctl on the host (never installed there). Get the gateway's certificate with certbot, then
# point the gateway at it, check nginx's configuration and reload nginx.
# Usage: acme-certificate LIVE_DIR CERT KEY CA_BUNDLE CERTBOT [ARG...]
#   LIVE_DIR   certbot's folder of the domain (fullchain.pem, privkey.pem)
#   CERT KEY   the certificate chain and key the gateway's nginx reads
#   CA_BUNDLE  the CA file certbot trusts for the ACME server (REQUESTS_CA_BUNDLE); '' for the system's
#   CERTBOT [ARG...]  certbot's command line (http-01 on a webroot)
set -eu
live=$1 cert=$2 key=$3 ca_bundle=$4
shift 4

if [ -n "$ca_bundle" ]; then
    REQUESTS_CA_BUNDLE=$ca_bundle "$@"
else
    "$@"
fi
ln -sfn "$live/fullchain.pem" "$cert"
ln -sfn "$live/privkey.pem" "$key"
nginx -t -q
systemctl reload nginx
