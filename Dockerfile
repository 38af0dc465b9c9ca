# The cdc tools (`cdc init`, `register-connector`, `poll`, `binance-sim`, `consume`, ...) as one image.
#   docker build -t cdc:local .          (compose/docker-compose.yml builds it as cdc:local)
# Stage 1 builds wheels of the project (its C extensions compiled there) and its dependencies;
# stage 2 installs only those wheels on the same pinned base and runs as an unprivileged user.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.cfg setup.py README.md ./
COPY cdc_cli ./cdc_cli
COPY cdc_consumer ./cdc_consumer
COPY ingest ./ingest
COPY connectors ./connectors
COPY sql ./sql
COPY cql ./cql
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 cdc \
 && useradd --system --uid 10001 --gid cdc --home-dir /home/cdc --create-home --shell /usr/sbin/nologin cdc
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels cdc \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /home/cdc
ENTRYPOINT ["cdc"]
CMD ["--help"]
