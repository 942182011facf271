FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY replay ./replay
COPY player_assets ./player_assets
RUN pip install --no-cache-dir .
ENV REPLAY_DATA=/data REPLAY_HOST=0.0.0.0
EXPOSE 8080
CMD ["replay", "serve"]
