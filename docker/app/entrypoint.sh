#!/bin/sh
# Entry point of the PilotChain image. Compose mounts the project directory at /pilotchain; the
# containers act as the owner of that directory, whatever its uid, so that `pilotchain init`
# writes keys/ and genesis.json that belong to the user who cloned the project, and the bridge and
# the faucet can read those keys (mode 0600). No uid has to be configured for that. Started as
# another user than root (`docker run --user ...`), it runs the command as that user.
set -eu
STATE_DIR=/var/lib/pilotchain
if [ "$(id -u)" = 0 ] && [ -d /pilotchain ]; then
    owner=$(stat -c %u /pilotchain)
    group=$(stat -c %g /pilotchain)
    if [ "$owner" != 0 ]; then
        # Named volumes mounted under /var/lib/pilotchain (the portal's index) start out owned
        # by root or by the image's pilot user: hand them to the owner once.
        if [ -d "$STATE_DIR" ] && [ "$(stat -c %u "$STATE_DIR")" != "$owner" ]; then
            chown -R "$owner:$group" "$STATE_DIR"
        fi
        exec setpriv --reuid="$owner" --regid="$group" --clear-groups -- "$@"
    fi
fi
exec "$@"
