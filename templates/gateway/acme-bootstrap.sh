#!/bin/sh
# Run by gpuctl on the host (never installed there). Before certbot's first certificate exists, point
# the gateway at a short-lived self-signed one, so nginx can start and serve the http-01 challenge on
# port 80; once certbot's certificate exists, link the gateway to it.
# Usage: acme-bootstrap DOMAIN LIVE_DIR CERT KEY WEBROOT
#   LIVE_DIR  certbot's folder of DOMAIN (fullchain.pem, privkey.pem)
#   CERT KEY  the certificate chain and key the gateway's nginx reads
#   WEBROOT   the folder certbot writes its http-01 challenges to
set -eu
domain=$1 live=$2 cert=$3 key=$4 webroot=$5

mkdir -p "$webroot" "$(dirname "$cert")"
if [ -e "$live/fullchain.pem" ]; then
    ln -sfn "$live/fullchain.pem" "$cert"
    ln -sfn "$live/privkey.pem" "$key"
elif [ ! -e "$cert" ]; then
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=$domain" -keyout "$key" -out "$cert" 2>/dev/null
    )
    chmod 0644 "$cert"
fi
