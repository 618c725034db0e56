-- The compose PostgreSQL holds two databases: staging (Aurora's stand-in) and redshift (the
-- Redshift stand-in that the redshift sink loads with COPY FROM STDIN, REDSHIFT_LOAD_MODE=stdin).
CREATE DATABASE staging;
CREATE DATABASE redshift;
