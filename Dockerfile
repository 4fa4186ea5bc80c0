FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY newsletter ./newsletter
COPY worker.py scheduler.py ./
RUN pip install --no-cache-dir . flower
RUN useradd --create-home newsletter && mkdir /journal && chown newsletter /journal
USER newsletter
