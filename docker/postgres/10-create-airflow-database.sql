-- Airflow keeps its metadata in a database of its own next to the warehouse.
-- The postgres image runs this once, when it initialises an empty data volume.
create database airflow;
