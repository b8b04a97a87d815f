#!/bin/sh
# Starts the stack's MQTT broker the way runner/mqtt.py does natively: no anonymous access, two
# accounts with the passwords `pilotchain init` wrote to keys/mqtt/<user>.password (the ingest
# reads every meter's topic, the meters publish on it), persistence on, so the messages queued
# for the subscriber's session survive a restart.
#
# No password is ever on a command line: the password file is first written as plain
# user:password lines and then hashed in place by `mosquitto_passwd -U`; the health check reads
# the ingest's password from a private options file of mosquitto_sub (found through
# XDG_CONFIG_HOME). Works on the official eclipse-mosquitto image (Alpine) and on the Debian
# stand-in the tests build: both have mosquitto, mosquitto_passwd, mosquitto_sub and the user
# `mosquitto`, to which mosquitto drops from root (`user` below).
set -eu
keys=${KEYS_DIR:-/pilotchain/keys}
topic=${MQTT_TOPIC:-pilotchain/meters/+/readings}
ingest_user=${MQTT_USERNAME:-ingest}
meter_user=${MQTT_METER_USERNAME:-meter}
run=/tmp/pilotchain-mosquitto
# The volume: the official image declares it, the stand-in gets it from Compose.
data=/mosquitto/data

umask 077
rm -rf "$run"
mkdir -p "$run/health" "$data"
for user in "$ingest_user" "$meter_user"; do
    file="$keys/mqtt/$user.password"
    if [ ! -s "$file" ]; then
        echo "mosquitto: $file is missing; the init service creates it (docker compose up init)." >&2
        exit 1
    fi
    printf '%s:%s\n' "$user" "$(cat "$file")" >> "$run/passwd"
done
mosquitto_passwd -U "$run/passwd"

# The ingest reads below the pattern's first "+" (every meter), a meter writes the pattern.
case $topic in
    *+*) reads="${topic%%+*}#" ;;
    *) reads=$topic ;;
esac
printf 'user %s\ntopic read %s\n\nuser %s\ntopic write %s\n' \
    "$ingest_user" "$reads" "$meter_user" "$topic" > "$run/acl"

# stderr, not stdout: mosquitto buffers stdout when it is no terminal, and `docker compose logs`
# would show nothing until it exits.
cat > "$run/mosquitto.conf" <<EOF
listener 1883
allow_anonymous false
password_file $run/passwd
acl_file $run/acl
persistence true
persistence_location $data/
autosave_interval 1
max_queued_messages 1000000
log_dest stderr
user mosquitto
EOF

# For the health check only (root's, never mosquitto's): connect as the ingest would.
printf -- '-h 127.0.0.1\n-p 1883\n-u %s\n-P %s\n' "$ingest_user" \
    "$(cat "$keys/mqtt/$ingest_user.password")" > "$run/health/mosquitto_sub"

# mosquitto opens its files after dropping to its user (and 2.0.16+ warns unless it owns them).
chown mosquitto:mosquitto "$run" "$run/passwd" "$run/acl" "$run/mosquitto.conf"
chown -R mosquitto:mosquitto "$data"
exec mosquitto -c "$run/mosquitto.conf"
