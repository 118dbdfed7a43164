-- One database and login role per system that keeps state in PostgreSQL, run once by the postgres image on an
-- empty data volume (docker-entrypoint-initdb.d). Passwords and the downstream role's name come from the postgres
-- container's environment (docker-compose.yml passes them from .env): psql's \getenv reads them, and :'name'
-- quotes them as literals, :"name" as identifiers. ON_ERROR_STOP is set by the image: a missing one stops here.
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv r2ec_password R2EC_DB_PASSWORD
\getenv api_password R2EC_API_DB_PASSWORD
\getenv reader_password R2EC_READER_DB_PASSWORD
\getenv reader_role R2EC_RECSTORE_READER_ROLE

-- Airflow's metadata database (and the Celery result backend).
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;

-- MLflow's tracking and model registry store.
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;

-- The service: recommendations tables (Alembic migrations) and Feast's registry, offline and online store.
CREATE ROLE r2ec LOGIN PASSWORD :'r2ec_password';
CREATE DATABASE r2ec OWNER r2ec;

-- The read API (R2EC_RECSTORE_READER_URL): may read every table r2ec creates, write none.
CREATE ROLE r2ec_api LOGIN PASSWORD :'api_password';
-- Downstream apps (R2EC_RECSTORE_READER_ROLE): the migration grants it SELECT on recommendations_current only;
-- created here so that it has a password (the migration alone would make it without one).
CREATE ROLE :"reader_role" LOGIN PASSWORD :'reader_password';

\connect r2ec
ALTER DEFAULT PRIVILEGES FOR ROLE r2ec IN SCHEMA public GRANT SELECT ON TABLES TO r2ec_api;
