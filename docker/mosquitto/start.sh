#!/bin/sh
# Starts the stack's MQTT broker the way runner/mqtt.py does natively: no anonymous access; the
# ingest's account reads every meter's topic, the monitor's (health checks) only connects, and
# each meter has its own account (keys/mqtt/meters.passwd, hashed, written by `pilotchain meters
# register` and `meters mqtt-password`) that may publish on its own topic only; every client id
# is replaced by its account name, so nobody can take over the ingest's session. Persistence on,
# so the messages queued for the subscriber's session survive a restart. Messages past 64 KiB
# are dropped (a reading is about 350 bytes).
#
# No password is ever on a command line: the service accounts' passwords (keys/mqtt/<user>.password,
# written by `pilotchain init`) are first written as plain user:password lines and then hashed in
# place by `mosquitto_passwd -U`; the meters' lines are hashed already. The script stays beside
# mosquitto and, when meters.passwd changes, writes the password file again and tells mosquitto
# to read it (SIGHUP), so a meter registered meanwhile can connect within seconds. The health
# check connects as the monitor, from a private options file of mosquitto_sub (found through
# XDG_CONFIG_HOME). Works on the official eclipse-mosquitto image (Alpine) and on the Debian
# stand-in the tests build: both have mosquitto, mosquitto_passwd, mosquitto_sub and the user
# `mosquitto`, to which mosquitto drops from root (`user` below).
set -eu
keys=${KEYS_DIR:-/pilotchain/keys}
topic=${MQTT_TOPIC:-pilotchain/meters/+/readings}
ingest_user=${MQTT_USERNAME:-ingest}
monitor_user=monitor
meters=${MQTT_METER_ACCOUNTS_FILE:-$keys/mqtt/meters.passwd}
run=/tmp/pilotchain-mosquitto
# The volume: the official image declares it, the stand-in gets it from Compose.
data=/mosquitto/data

umask 077
rm -rf "$run"
mkdir -p "$run/health" "$data"

write_accounts() {
    : > "$run/passwd.new"
    for user in "$ingest_user" "$monitor_user"; do
        file="$keys/mqtt/$user.password"
        if [ ! -s "$file" ]; then
            echo "mosquitto: $file is missing; the init service creates it (docker compose up init)." >&2
            exit 1
        fi
        printf '%s:%s\n' "$user" "$(cat "$file")" >> "$run/passwd.new"
    done
    mosquitto_passwd -U "$run/passwd.new"
    if [ -s "$meters" ]; then
        cat "$meters" >> "$run/passwd.new"
    fi
    chown mosquitto:mosquitto "$run/passwd.new"
    mv "$run/passwd.new" "$run/passwd"
}

accounts_stamp() {
    cksum "$meters" 2>/dev/null || echo none
}

write_accounts
seen=$(accounts_stamp)

# The ingest reads below the pattern's first "+" (every meter); a meter writes its own topic:
# the pattern with its account name for the "+"; the monitor reads a topic nobody writes.
reads="${topic%%+*}#"
own="${topic%%+*}%u${topic#*+}"
printf 'user %s\ntopic read %s\n\nuser %s\ntopic read pilotchain/health\n\npattern write %s\n' \
    "$ingest_user" "$reads" "$monitor_user" "$own" > "$run/acl"

# stderr, not stdout: mosquitto buffers stdout when it is no terminal, and `docker compose logs`
# would show nothing until it exits.
cat > "$run/mosquitto.conf" <<EOF
listener 1883
allow_anonymous false
use_username_as_clientid true
password_file $run/passwd
acl_file $run/acl
persistence true
persistence_location $data/
autosave_interval 1
max_queued_messages 1000000
message_size_limit 65536
log_dest stderr
user mosquitto
EOF

# For the health check only (root's, never mosquitto's): connect as the monitor, whose client id
# is its own, never the subscriber's.
printf -- '-h 127.0.0.1\n-p 1883\n-u %s\n-P %s\n' "$monitor_user" \
    "$(cat "$keys/mqtt/$monitor_user.password")" > "$run/health/mosquitto_sub"

# mosquitto opens its files after dropping to its user (and 2.0.16+ warns unless it owns them).
chown mosquitto:mosquitto "$run" "$run/passwd" "$run/acl" "$run/mosquitto.conf"
chown -R mosquitto:mosquitto "$data"
mosquitto -c "$run/mosquitto.conf" &
broker=$!
# docker stop's SIGTERM goes to this script (PID 1): pass it on, then wait for mosquitto.
trap 'kill -TERM "$broker" 2>/dev/null || true' TERM INT
while kill -0 "$broker" 2>/dev/null; do
    # A waited-for sleep, so a TERM is handled at once rather than after it.
    sleep 2 &
    wait $! || true
    now=$(accounts_stamp)
    if [ "$now" != "$seen" ]; then
        write_accounts
        kill -HUP "$broker" 2>/dev/null || true
        seen=$now
        echo "mosquitto: the meters' accounts changed; the broker reads them again." >&2
    fi
done
wait "$broker"
