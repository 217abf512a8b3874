FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md events.toml alembic.ini ./
COPY sagaline sagaline
COPY sagas sagas
COPY tasks tasks
COPY config config
RUN pip install --no-cache-dir ".[postgresql]"
# The installed config package looks for the taxonomy beside it; the image keeps it here.
ENV SAGALINE_EVENTS_TAXONOMY=/app/events.toml
# The volume mounted at /data starts with this folder's owner: the app's user.
RUN mkdir -p /data && chown nobody /data
USER nobody
