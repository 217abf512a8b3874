FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sagaline sagaline
COPY sagas sagas
COPY tasks tasks
COPY config config
RUN pip install --no-cache-dir .
USER nobody
