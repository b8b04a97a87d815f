# PilotChain's Python image: the `pilotchain` console script (`pilotchain init` is docker-compose.yml's
# one-shot set-up step) and, in later issues, the bridge and the faucet.
#
#   docker compose build init            # or: docker build -t pilotchain/app:local .
#
# The build context is limited by .dockerignore to what `pip install .` needs; keys, chain data,
# .env and the virtualenv never enter the image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . \
    && rm -rf /src \
    && useradd --uid 1000 --user-group --home-dir /home/pilot --create-home --shell /usr/sbin/nologin pilot

# Compose mounts the project directory here; `pilotchain init` writes genesis.json and keys/ into it.
WORKDIR /pilotchain
USER pilot
CMD ["pilotchain", "--help"]
