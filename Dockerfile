# Build stage: compiles Replay's two small C parts (setup.py) into a wheel; the image that runs
# it needs no compiler.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY replay ./replay
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY player_assets ./player_assets
ENV REPLAY_DATA=/data REPLAY_HOST=0.0.0.0
EXPOSE 8080
CMD ["replay", "serve"]
