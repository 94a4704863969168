#!/bin/sh
# One-shot set-up before the platform starts, run by the airflow-init service on every
# `docker compose up`: each step is safe to repeat.
set -eu

echo "airflow-init: applying the warehouse schema (sql/NN_*.sql)"
c360 migrate

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

echo "airflow-init: writing the login of ${AIRFLOW_ADMIN_USER}"
# SimpleAuthManager reads each configured user's password from this JSON file.
python -c '
import json, os, pathlib
path = pathlib.Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.write_text(json.dumps({os.environ["AIRFLOW_ADMIN_USER"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}))
path.chmod(0o600)
'

echo "airflow-init: creating the connection customer360_postgres"
# Re-created each time, so it follows the credentials in .env.
airflow connections delete customer360_postgres >/dev/null 2>&1 || true
airflow connections add customer360_postgres \
    --conn-uri "$(python -c 'from customer360.airflow_local import connection_uri; print(connection_uri())')"

if [ -f "${C360_DATA_DIR}/customers.csv" ]; then
    echo "airflow-init: demo data already in ${C360_DATA_DIR}"
else
    echo "airflow-init: generating the demo data set into ${C360_DATA_DIR}"
    c360 generate
fi
