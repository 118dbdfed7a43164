-- One database and role per system that keeps state in PostgreSQL.
CREATE ROLE airflow LOGIN PASSWORD 'airflow';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE r2ec LOGIN PASSWORD 'r2ec';
CREATE DATABASE r2ec OWNER r2ec;
