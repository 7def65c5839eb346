# The worker and the API for scale-out; the embedded runtime needs no container.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS=""
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY liftloop ./liftloop
COPY workflows ./workflows
COPY agents ./agents
COPY tools ./tools
COPY policies ./policies
COPY connectors ./connectors
COPY approvals ./approvals
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
RUN useradd --create-home liftloop && mkdir -p /data && chown liftloop /data
USER liftloop
ENV LIFTLOOP_DATA_DIR=/data
CMD ["liftloop", "serve", "worker"]
