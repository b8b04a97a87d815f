# PilotChain's Python image: the `pilotchain` console script (Compose's one-shot `init` and
# `deploy` steps), the bridge, the faucet, the meter ingest, the closer and the participant
# portal (its indexer and its web app, which serves uPlot from the node_modules below).
#
#   docker compose build init            # or: docker build -t pilotchain/app:local .
#
# The build context is limited by .dockerignore to what the image needs; keys, chain data, .env
# and the virtualenv never enter it. The Settlement contract is compiled here, at build time,
# with the npm solc-js the project pins, so the running containers need no compiler; the same
# `npm ci` installs uPlot, which the portal serves from $PILOTCHAIN_HOME/node_modules (no CDN).
#
# PYTHON_IMAGE swaps the base for a local build of the same Python on the same Debian, for
# machines that reach no image registry (scripts/lib/build-local-images.sh makes one).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PILOTCHAIN_HOME=/opt/pilotchain

# Node.js runs solc-js (the compiler pinned in package.json); npm installs it and uPlot.
# DejaVu Sans: the portal's PDF statements embed it (PORTAL_PDF_FONTS).
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --uid 1000 --user-group --home-dir /home/pilot --create-home --shell /usr/sbin/nologin pilot \
    && mkdir -p /var/lib/pilotchain "$PILOTCHAIN_HOME/scripts/lib"

# What changes seldom comes first, each in a layer of its own, so that a change to the code
# rebuilds only the last layers (seconds) and not pip's and npm's installs (a minute): the
# Python dependencies as pyproject.toml lists them, then the npm packages as the lock pins them.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && pip install -r requirements.txt
COPY package.json package-lock.json $PILOTCHAIN_HOME/
RUN cd "$PILOTCHAIN_HOME" && npm ci --omit=dev --no-audit --no-fund
COPY . .
# --no-deps: the dependencies are above; pip check fails the build if they no longer match.
RUN pip install --no-deps . \
    && pip check \
    && cp -r contracts "$PILOTCHAIN_HOME/" \
    && cp scripts/lib/solc-js "$PILOTCHAIN_HOME/scripts/lib/" \
    && cd "$PILOTCHAIN_HOME" \
    && python -c "from pilotchain.contract import compile_settlement; compile_settlement()" \
    && rm -rf /src
COPY docker/app/entrypoint.sh /usr/local/bin/pilotchain-entrypoint

# /var/lib/pilotchain holds named volumes (the portal's SQLite index); the entry point hands
# it to the user the containers run as.
# Compose mounts the project directory here; `pilotchain init` writes genesis.json and keys/ into
# it. The entry point starts as root and runs the command as the owner of this directory (pilot,
# when nothing is mounted).
WORKDIR /pilotchain
RUN chown pilot:pilot /pilotchain
ENTRYPOINT ["pilotchain-entrypoint"]
CMD ["pilotchain", "--help"]
