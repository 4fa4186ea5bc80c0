# The newsletter image: the web app, Celery workers, the scheduler and Flower.
#
# Installed from a wheelhouse (`make wheelhouse`: `pip wheel` of this project and Flower
# into build/wheelhouse), so the build itself needs no network; `make image` does both.
# The wheels are those of the machine that ran `pip wheel`: Linux of the image's
# architecture. Templates, migrations and the sample series are inside the project's wheel.
#
# BASE_IMAGE: any Debian-based image with Python 3.11+ and its venv module. The default
# is the official one; scripts/stand-in-images builds a local stand-in from Debian
# packages for machines that cannot pull it.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS install
COPY build/wheelhouse /wheelhouse
RUN python3 -m venv /opt/newsletter \
 && /opt/newsletter/bin/pip install --quiet --no-index --no-cache-dir \
      --find-links /wheelhouse newsletter flower

FROM ${BASE_IMAGE}
ENV PATH=/opt/newsletter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
# The journal directory becomes a volume in docker-compose.yml; a new named volume
# takes its owner from here, so the non-root user can write to it.
RUN useradd --create-home --uid 10001 --user-group newsletter \
 && mkdir /journal \
 && chown newsletter:newsletter /journal
COPY --from=install /opt/newsletter /opt/newsletter
COPY docker/healthcheck /usr/local/bin/newsletter-healthcheck
# For `celery -A worker worker` and `python scheduler.py`, as in a checkout.
COPY worker.py scheduler.py /app/
WORKDIR /app
USER newsletter
EXPOSE 8000
# The web app's; docker-compose.yml gives each other process a check of its own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["newsletter-healthcheck", "web"]
CMD ["newsletter", "serve", "--host", "0.0.0.0", "--port", "8000"]
