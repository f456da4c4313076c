-- The projector logs in as tidzam_projector (projections/roles.py), which does not
-- own the partitioned tables: the function that adds a month partition runs with
-- its owner's rights, on a fixed search path (it names every object by schema).
DO $$
BEGIN
    IF to_regprocedure('tidzam_ensure_month_partition(regclass, timestamptz)') IS NOT NULL THEN
        ALTER FUNCTION tidzam_ensure_month_partition(regclass, timestamptz)
            SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
    END IF;
END
$$;
