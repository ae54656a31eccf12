# Image of the unmask worker and review app (used by docker-compose.yml).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
ENV UNMASK_ENVIRONMENT=production
EXPOSE 9108 8088
ENTRYPOINT ["unmask"]
CMD ["worker"]
