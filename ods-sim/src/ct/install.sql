-- Change Tracking emulation and SQL Server catalog for ods-sim (see docs/ods-simulator.md).
-- Idempotent: every object is created with IF NOT EXISTS or CREATE OR REPLACE.
-- The database name (sim.meta 'database_name') is stored by the Rust installer.

create schema if not exists ct;
create schema if not exists sys;
create schema if not exists "INFORMATION_SCHEMA";
create schema if not exists sim;
create schema if not exists dbo;

------------------------------------------------------------------------------------------------
-- State
------------------------------------------------------------------------------------------------

create table if not exists sim.meta (
    key text primary key,
    value text
);
insert into sim.meta (key, value)
values ('created_at', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS'))
on conflict (key) do nothing;

-- Declared SQL Server types of user columns, with the values INFORMATION_SCHEMA.COLUMNS shows.
create table if not exists sim.columns (
    table_schema text not null,
    table_name text not null,
    column_name text not null,
    ordinal integer not null,
    data_type text not null,
    max_length integer,
    numeric_precision integer,
    numeric_scale integer,
    datetime_precision integer,
    is_nullable boolean not null,
    primary key (table_schema, table_name, column_name)
);

create sequence if not exists ct.version_seq as bigint minvalue 1;

-- One row per committed transaction that changed (or truncated, or enabled) a tracked table.
create table if not exists ct.tx (
    txid bigint primary key,
    version bigint not null unique,
    commit_time timestamptz not null
);

-- Transactions that registered and wait for their version (rows live only inside their
-- own transaction).
create unlogged table if not exists ct.pending (
    txid bigint primary key
);

create table if not exists ct.database (
    one boolean primary key default true check (one),
    retention_period integer not null default 2,
    retention_period_units integer not null default 3,
    is_auto_cleanup_on boolean not null default true,
    is_enabled boolean not null default false,
    begin_version bigint not null default 0
);
insert into ct.database default values on conflict do nothing;

-- Tracked tables. begin_version is the version of enable_txid (kept in ct.tx by cleanup).
create table if not exists ct.tables (
    object_id integer primary key,
    schema_name text not null,
    table_name text not null,
    is_track_columns_updated_on boolean not null,
    enable_txid bigint not null,
    cleanup_version bigint not null default 0,
    unique (schema_name, table_name)
);

-- TRUNCATEs of tracked tables: each raises min_valid_version to the truncating version.
create table if not exists ct.truncations (
    object_id integer not null,
    txid bigint not null,
    primary key (object_id, txid)
);

------------------------------------------------------------------------------------------------
-- Names
------------------------------------------------------------------------------------------------

-- A PostgreSQL identifier for `prefix:schema.table`: the text itself when it fits in 63 bytes,
-- else its first 54 bytes (whole characters), '~' and 8 hex digits of a hash of the whole text.
-- Must stay identical to `ct::pg_object_name` in Rust.
create or replace function ct.object_ident(prefix text, schema_name text, table_name text)
returns text language plpgsql immutable strict as $$
declare
    -- Names as PostgreSQL stores them (clipped to 63 bytes), so that a call with the name as
    -- written and one with the stored name (tg_table_name) agree.
    whole text := prefix || ':' || schema_name::name::text || '.' || table_name::name::text;
    bytes bytea;
    h bigint := 0;
    cut text;
begin
    if octet_length(whole) <= 63 then
        return whole;
    end if;
    bytes := convert_to(whole, 'UTF8');
    for i in 0 .. length(bytes) - 1 loop
        h := (h * 31 + get_byte(bytes, i)) % 2147483647;
    end loop;
    cut := left(whole, 54);
    while octet_length(cut) > 54 loop
        cut := left(cut, -1);
    end loop;
    return cut || '~' || lpad(to_hex(h), 8, '0');
end $$;

create or replace function sim.db_name() returns text language sql stable as $$
    select value from sim.meta where key = 'database_name'
$$;

create or replace function sim.db_id() returns integer language sql immutable as $$
    select 5
$$;

-- SQL Server's fixed schema ids for dbo, guest, INFORMATION_SCHEMA and sys; the namespace oid
-- for the others.
create or replace function sim.schema_id(schema_name text) returns integer
language sql stable as $$
    select case $1
        when 'dbo' then 1
        when 'guest' then 2
        when 'INFORMATION_SCHEMA' then 3
        when 'sys' then 4
        else (select n.oid::integer from pg_catalog.pg_namespace n where n.nspname = $1)
    end
$$;

create or replace function sim.schema_name(schema_id integer) returns text
language sql stable as $$
    select case $1
        when 1 then 'dbo'
        when 2 then 'guest'
        when 3 then 'INFORMATION_SCHEMA'
        when 4 then 'sys'
        else (select n.nspname::text from pg_catalog.pg_namespace n
              where n.oid = $1::oid
                and n.nspname not in ('dbo', 'guest', 'INFORMATION_SCHEMA', 'sys'))
    end
$$;

create or replace function sim.is_user_schema(schema_name text) returns boolean
language sql immutable as $$
    select $1 not like 'pg\_%'
       and $1 not in ('information_schema', 'public', 'ct', 'sim', 'sys', 'INFORMATION_SCHEMA')
$$;

-- `s.t`, `[s].[t]`, `"s"."t"`, `db.s.t`, `t` → its parts (NULL when malformed).
create or replace function ct.parse_name(name text) returns text[]
language plpgsql immutable strict as $$
declare
    parts text[] := '{}';
    cur text := '';
    quoted boolean := false;
    i integer := 1;
    n integer := length(name);
    c text;
    closer text;
begin
    while i <= n loop
        c := substr(name, i, 1);
        if c = '[' or c = '"' then
            closer := case c when '[' then ']' else '"' end;
            quoted := true;
            i := i + 1;
            loop
                if i > n then
                    return null;
                end if;
                c := substr(name, i, 1);
                if c = closer then
                    if substr(name, i + 1, 1) = closer then
                        cur := cur || c;
                        i := i + 2;
                        continue;
                    end if;
                    i := i + 1;
                    exit;
                end if;
                cur := cur || c;
                i := i + 1;
            end loop;
        elsif c = '.' then
            parts := parts || case when quoted then cur else btrim(cur) end;
            cur := '';
            quoted := false;
            i := i + 1;
        else
            cur := cur || c;
            i := i + 1;
        end if;
    end loop;
    return parts || case when quoted then cur else btrim(cur) end;
end $$;

-- OBJECT_ID('name'): tables, views and constraints of the database; NULL when absent.
-- Exact (case-sensitive) match first, then a case-insensitive match when it is unique, as the
-- SQL Server default collation is case-insensitive.
create or replace function ct.object_id(name text) returns integer
language plpgsql stable as $$
declare
    p text[] := ct.parse_name(name);
    k integer := coalesce(array_length(p, 1), 0);
    s text;
    t text;
    found integer[];
begin
    if k = 0 or k > 4 then
        return null;
    end if;
    if k >= 3 and p[k - 2] <> '' and lower(p[k - 2]) <> lower(coalesce(sim.db_name(), '')) then
        return null;
    end if;
    t := p[k];
    s := coalesce(nullif(case when k >= 2 then p[k - 1] end, ''), 'dbo');
    select array_agg(o.id) into found from (
        select c.oid::integer as id from pg_catalog.pg_class c
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname = s and c.relname = t and c.relkind in ('r', 'p', 'v', 'm', 'f')
        union all
        select con.oid::integer from pg_catalog.pg_constraint con
        join pg_catalog.pg_namespace n on n.oid = con.connamespace
        where n.nspname = s and con.conname = t and con.contype in ('p', 'u', 'f', 'c')
    ) o;
    if array_length(found, 1) = 1 then
        return found[1];
    end if;
    select array_agg(o.id) into found from (
        select c.oid::integer as id from pg_catalog.pg_class c
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where lower(n.nspname) = lower(s) and lower(c.relname) = lower(t)
          and c.relkind in ('r', 'p', 'v', 'm', 'f')
        union all
        select con.oid::integer from pg_catalog.pg_constraint con
        join pg_catalog.pg_namespace n on n.oid = con.connamespace
        where lower(n.nspname) = lower(s) and lower(con.conname) = lower(t)
          and con.contype in ('p', 'u', 'f', 'c')
    ) o;
    if array_length(found, 1) = 1 then
        return found[1];
    end if;
    return null;
end $$;

create or replace function ct.object_name(object_id integer) returns text
language sql stable as $$
    select coalesce(
        (select c.relname::text from pg_catalog.pg_class c where c.oid = $1::oid),
        (select con.conname::text from pg_catalog.pg_constraint con where con.oid = $1::oid))
$$;

create or replace function ct.object_schema_name(object_id integer) returns text
language sql stable as $$
    select coalesce(
        (select n.nspname::text from pg_catalog.pg_class c
         join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = $1::oid),
        (select n.nspname::text from pg_catalog.pg_constraint con
         join pg_catalog.pg_namespace n on n.oid = con.connamespace where con.oid = $1::oid))
$$;

------------------------------------------------------------------------------------------------
-- Versions: assigned at commit
------------------------------------------------------------------------------------------------

-- Called by the change triggers: registers the current transaction once, so that its deferred
-- constraint trigger assigns it a version at COMMIT. The marker setting is transaction-local
-- and rolls back with a rolled-back savepoint, exactly like the ct.pending row.
create or replace function ct.register() returns void language plpgsql as $$
declare
    x bigint := txid_current();
begin
    if current_setting('ct.registered_txid', true) is distinct from x::text then
        insert into ct.pending (txid) values (x) on conflict do nothing;
        perform set_config('ct.registered_txid', x::text, true);
    end if;
end $$;

-- Runs at COMMIT (deferred constraint trigger on ct.pending). The advisory lock is held until
-- the transaction has committed and become visible, so versions are drawn in commit order:
-- a transaction draws its version only after every transaction with a lower version is
-- visible to new snapshots.
create or replace function ct.assign_version() returns trigger language plpgsql as $$
begin
    perform pg_advisory_xact_lock(4242424201);
    insert into ct.tx (txid, version, commit_time)
    values (new.txid, nextval('ct.version_seq'), clock_timestamp());
    delete from ct.pending where txid = new.txid;
    return null;
end $$;

do $$
begin
    if not exists (select 1 from pg_catalog.pg_trigger
                   where tgrelid = 'ct.pending'::regclass and tgname = 'assign_version') then
        create constraint trigger assign_version after insert on ct.pending
            deferrable initially deferred for each row execute function ct.assign_version();
    end if;
end $$;

-- CHANGE_TRACKING_CURRENT_VERSION(): NULL when CT is off for the database.
create or replace function ct.current_version() returns bigint language sql stable as $$
    select case when d.is_enabled
                then coalesce((select max(x.version) from ct.tx x), d.begin_version) end
    from ct.database d
$$;

-- CHANGE_TRACKING_MIN_VALID_VERSION(object_id): NULL when CT is off for the table or database.
create or replace function ct.min_valid_version(object_id integer) returns bigint
language sql stable as $$
    select case when d.is_enabled then (
        select greatest(b.version, t.cleanup_version,
                        (select max(x.version) from ct.truncations r
                         join ct.tx x on x.txid = r.txid where r.object_id = t.object_id))
        from ct.tables t join ct.tx b on b.txid = t.enable_txid
        where t.object_id = $1)
    end
    from ct.database d
$$;

------------------------------------------------------------------------------------------------
-- Enabling and disabling
------------------------------------------------------------------------------------------------

create or replace function ct.enable_database(retention integer, units integer, auto_cleanup boolean)
returns void language plpgsql as $$
begin
    if units not in (1, 2, 3) or retention is null or retention < 1 then
        raise exception 'Invalid CHANGE_RETENTION value % (units %).', retention, units
            using errcode = '22023';
    end if;
    update ct.database set
        retention_period = retention,
        retention_period_units = units,
        is_auto_cleanup_on = coalesce(auto_cleanup, true),
        begin_version = case when is_enabled then begin_version
                             else coalesce((select max(version) from ct.tx), begin_version) end,
        is_enabled = true;
end $$;

create or replace function ct.disable_database() returns void language plpgsql as $$
begin
    if exists (select 1 from ct.tables) then
        raise exception 'Change tracking is enabled for one or more tables in database ''%''. Disable change tracking on each table before disabling it for the database.',
            sim.db_name()
            using errcode = '55000', hint = 'sqlserver_error=22115';
    end if;
    update ct.database set is_enabled = false;
end $$;

-- The statement-level change trigger of every tracked table.
create or replace function ct.on_truncate() returns trigger language plpgsql as $$
begin
    execute format('delete from ct.%I', ct.object_ident('log', tg_table_schema, tg_table_name));
    insert into ct.truncations (object_id, txid) values (tg_relid::integer, txid_current())
    on conflict do nothing;
    perform ct.register();
    return null;
end $$;

create or replace function ct.enable_table(schema_name text, table_name text, track_columns boolean)
returns void language plpgsql
set client_min_messages = warning as $$
declare
    rel regclass;
    log_t text;
    chg_f text;
    trg_f text;
    key_defs text;
    key_list text;
    l_keys text;
    l2_keys text;
    on_keys text;
    picked text;
    c_keys text;
begin
    if not (select d.is_enabled from ct.database d) then
        raise exception 'Cannot enable change tracking on table ''%''. Change tracking must be enabled on the database ''%'' before it can be enabled on the table.',
            table_name, sim.db_name()
            using errcode = '55000', hint = 'sqlserver_error=4997';
    end if;
    rel := to_regclass(format('%I.%I', schema_name, table_name));
    if rel is null then
        raise exception 'Cannot find the object "%" because it does not exist or you do not have permissions.',
            table_name
            using errcode = '42P01', hint = 'sqlserver_error=1088';
    end if;
    -- The names as stored (PostgreSQL clips identifiers to 63 bytes).
    select n.nspname, c.relname into schema_name, table_name
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where c.oid = rel;
    log_t := ct.object_ident('log', schema_name, table_name);
    chg_f := ct.object_ident('changes', schema_name, table_name);
    trg_f := ct.object_ident('trigger', schema_name, table_name);
    if exists (select 1 from ct.tables t where t.object_id = rel::oid::integer) then
        raise exception 'Change tracking is already enabled for table ''%''.', table_name
            using errcode = '55000', hint = 'sqlserver_error=4996';
    end if;

    select string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' order by k.n),
           string_agg(format('%I', a.attname), ', ' order by k.n),
           string_agg(format('l.%I', a.attname), ', ' order by k.n),
           string_agg(format('l2.%I', a.attname), ', ' order by k.n),
           string_agg(format('o_.%1$I = n_.%1$I', a.attname), ' and ' order by k.n),
           string_agg(format('coalesce(n_.%1$I, o_.%1$I)', a.attname), ', ' order by k.n),
           string_agg(format('c.%I', a.attname), ', ' order by k.n)
      into key_defs, key_list, l_keys, l2_keys, on_keys, picked, c_keys
      from pg_catalog.pg_index i
      cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, n)
      join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = rel and i.indisprimary and k.n <= i.indnkeyatts;
    if key_defs is null then
        raise exception 'Cannot enable change tracking on table ''%''. Change tracking requires a primary key on the table. Create a primary key on the table before enabling change tracking.',
            table_name
            using errcode = '55000';
    end if;

    -- Leftovers of an earlier tracking of a table of the same name.
    execute format('drop function if exists ct.%I(bigint)', chg_f);
    execute format('drop table if exists ct.%I', log_t);

    execute format(
        'create table ct.%I ("ct:seq" bigint generated always as identity, '
        '"ct:txid" bigint not null, "ct:op" char(1) not null, %s)', log_t, key_defs);
    execute format('create index on ct.%I ("ct:txid")', log_t);
    execute format('create index on ct.%I (%s)', log_t, key_list);

    execute format($fn$
        create or replace function ct.%1$I() returns trigger language plpgsql as $body$
        declare
            changed bigint;
        begin
            if tg_op = 'INSERT' then
                insert into ct.%2$I ("ct:txid", "ct:op", %3$s)
                select txid_current(), 'I', %3$s from ct_new;
            elsif tg_op = 'DELETE' then
                insert into ct.%2$I ("ct:txid", "ct:op", %3$s)
                select txid_current(), 'D', %3$s from ct_old;
            else
                insert into ct.%2$I ("ct:txid", "ct:op", %3$s)
                select txid_current(),
                       case when o_."ct:present" is null then 'I'
                            when n_."ct:present" is null then 'D'
                            else 'U' end,
                       %4$s
                from (select true as "ct:present", %3$s from ct_old) o_
                full join (select true as "ct:present", %3$s from ct_new) n_ on %5$s;
            end if;
            get diagnostics changed = row_count;
            if changed > 0 then
                perform ct.register();
            end if;
            return null;
        end $body$ $fn$, trg_f, log_t, key_list, picked, on_keys);

    execute format('create trigger "ct:insert" after insert on %s referencing new table as ct_new '
                   'for each statement execute function ct.%I()', rel, trg_f);
    execute format('create trigger "ct:update" after update on %s referencing old table as ct_old '
                   'new table as ct_new for each statement execute function ct.%I()', rel, trg_f);
    execute format('create trigger "ct:delete" after delete on %s referencing old table as ct_old '
                   'for each statement execute function ct.%I()', rel, trg_f);
    execute format('create trigger "ct:truncate" after truncate on %s '
                   'for each statement execute function ct.on_truncate()', rel);

    -- Net changes after $1 (NULL: all retained), only of committed transactions visible in the
    -- caller's snapshot (the caller's own uncommitted changes have no ct.tx row yet).
    -- Not inlined (SET clause): the statistics of a log holding one huge transaction would
    -- otherwise make the caller's plan expensive (JIT, hash joins over the base table); the
    -- ROWS estimate lets a caller's LEFT JOIN to the base table probe its primary key.
    execute format($fn$
        create function ct.%1$I(last bigint)
        returns table ("SYS_CHANGE_VERSION" bigint, "SYS_CHANGE_CREATION_VERSION" bigint,
                       "SYS_CHANGE_OPERATION" char(1), "SYS_CHANGE_COLUMNS" bytea,
                       "SYS_CHANGE_CONTEXT" bytea, %2$s)
        language sql stable rows 100 set jit = off as $body$
            select c."ct:version",
                   (select max(x2.version) from ct.%3$I l2 join ct.tx x2 on x2.txid = l2."ct:txid"
                     where l2."ct:op" = 'I' and (%4$s) = (%5$s)),
                   (case when c."ct:last_op" = 'D' then 'D'
                         when c."ct:first_op" = 'I' then 'I'
                         else 'U' end)::char(1),
                   null::bytea,
                   null::bytea,
                   %5$s
            from (
                select distinct on (%6$s)
                       x.version as "ct:version",
                       l."ct:op" as "ct:last_op",
                       first_value(l."ct:op") over (partition by %6$s
                                                    order by x.version, l."ct:seq")
                           as "ct:first_op",
                       %6$s
                from ct.tx x
                -- OFFSET 0 keeps the lateral subquery: one index probe per transaction above
                -- the baseline, whatever the statistics of a large log say.
                cross join lateral (
                    select * from ct.%3$I l0 where l0."ct:txid" = x.txid offset 0
                ) l
                where x.version > coalesce($1, -1)
                order by %6$s, x.version desc, l."ct:seq" desc
            ) c
        $body$ $fn$,
        chg_f, key_defs, log_t, l2_keys, c_keys, l_keys);

    insert into ct.tables (object_id, schema_name, table_name, is_track_columns_updated_on,
                           enable_txid)
    values (rel::oid::integer, schema_name, table_name, coalesce(track_columns, false),
            txid_current());
    perform ct.register();
end $$;

-- Removes the tracking objects of a table (its triggers too when the table still exists).
create or replace function ct.drop_tracking(object_id integer, schema_name text, table_name text)
returns void language plpgsql
set client_min_messages = warning as $$
declare
    rel regclass := to_regclass(format('%I.%I', schema_name, table_name));
begin
    if rel is not null and rel::oid::integer = object_id then
        execute format('drop trigger if exists "ct:insert" on %s', rel);
        execute format('drop trigger if exists "ct:update" on %s', rel);
        execute format('drop trigger if exists "ct:delete" on %s', rel);
        execute format('drop trigger if exists "ct:truncate" on %s', rel);
    end if;
    execute format('drop function if exists ct.%I(bigint)',
                   ct.object_ident('changes', schema_name, table_name));
    execute format('drop function if exists ct.%I()',
                   ct.object_ident('trigger', schema_name, table_name));
    execute format('drop table if exists ct.%I', ct.object_ident('log', schema_name, table_name));
    delete from ct.truncations r where r.object_id = $1;
    delete from ct.tables t where t.object_id = $1;
end $$;

create or replace function ct.disable_table(schema_name text, table_name text)
returns void language plpgsql
set client_min_messages = warning as $$
declare
    rel regclass := to_regclass(format('%I.%I', schema_name, table_name));
begin
    if rel is null then
        raise exception 'Cannot find the object "%" because it does not exist or you do not have permissions.',
            table_name
            using errcode = '42P01', hint = 'sqlserver_error=1088';
    end if;
    if not exists (select 1 from ct.tables t where t.object_id = rel::oid::integer) then
        raise exception 'Change tracking is not enabled on table ''%''.', table_name
            using errcode = '55000';
    end if;
    perform ct.drop_tracking(t.object_id, t.schema_name, t.table_name)
       from ct.tables t where t.object_id = rel::oid::integer;
end $$;

-- DROP TABLE / DROP SCHEMA of user tables: forget their declared types and tracking.
create or replace function ct.on_sql_drop() returns event_trigger language plpgsql as $$
declare
    r record;
begin
    for r in select d.objid, d.schema_name, d.object_name
             from pg_event_trigger_dropped_objects() d
             where d.object_type = 'table' and d.schema_name not in ('ct', 'sim') loop
        delete from sim.columns c
         where c.table_schema = r.schema_name and c.table_name = r.object_name;
        if exists (select 1 from ct.tables t where t.object_id = r.objid::integer) then
            perform ct.drop_tracking(r.objid::integer, r.schema_name, r.object_name);
        end if;
    end loop;
end $$;

do $$
begin
    if not exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'ct_on_sql_drop') then
        create event trigger ct_on_sql_drop on sql_drop execute function ct.on_sql_drop();
    end if;
end $$;

------------------------------------------------------------------------------------------------
-- Retention cleanup
------------------------------------------------------------------------------------------------

-- Removes the change rows of the transactions committed at or before now() - retention and
-- raises every tracked table's cleanup_version to the highest removed version Vc. Versions are
-- commit-ordered, so the removed transactions are exactly those with version <= Vc; a client
-- whose baseline is >= Vc (hence >= min_valid_version) still finds every change above it.
-- Returns Vc, or NULL when nothing was old enough (or CT is off).
create or replace function sim.cleanup_change_tracking(retention_seconds bigint default null)
returns bigint language plpgsql as $$
declare
    d ct.database;
    secs bigint;
    vc bigint;
    tbl record;
begin
    select * into d from ct.database;
    if not d.is_enabled then
        return null;
    end if;
    perform pg_advisory_xact_lock(4242424202);
    secs := coalesce(retention_seconds,
                     d.retention_period::bigint * case d.retention_period_units
                                                      when 1 then 60
                                                      when 2 then 3600
                                                      else 86400 end);
    select max(x.version) into vc from ct.tx x
     where x.commit_time <= now() - make_interval(secs => secs::double precision);
    if vc is null then
        return null;
    end if;
    for tbl in select * from ct.tables loop
        execute format('delete from ct.%I l using ct.tx x '
                       'where x.txid = l."ct:txid" and x.version <= $1',
                       ct.object_ident('log', tbl.schema_name, tbl.table_name))
        using vc;
    end loop;
    update ct.tables set cleanup_version = vc where cleanup_version < vc;
    delete from ct.truncations r using ct.tx x where x.txid = r.txid and x.version <= vc;
    -- Keep the newest transaction (it is the current version) and those that enabled a table
    -- (their version is the table's begin_version).
    delete from ct.tx x
     where x.version <= vc
       and x.version < (select max(y.version) from ct.tx y)
       and not exists (select 1 from ct.tables t where t.enable_txid = x.txid);
    return vc;
end $$;

------------------------------------------------------------------------------------------------
-- Catalog: SQL Server types of user columns
------------------------------------------------------------------------------------------------

create or replace view sim.user_relations as
select c.oid, n.nspname::text as schema_name, c.relname::text as table_name, c.relkind
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'v', 'm', 'f') and sim.is_user_schema(n.nspname);

-- Every column of every user table or view with its SQL Server type: as declared (sim.columns)
-- or derived from the PostgreSQL type.
create or replace view sim.column_types as
select r.schema_name as table_schema,
       r.table_name,
       a.attname::text as column_name,
       coalesce(s.ordinal, a.attnum::integer) as ordinal,
       case when s.column_name is not null then s.data_type else g.data_type end as data_type,
       case when s.column_name is not null then s.max_length else g.max_length end as max_length,
       case when s.column_name is not null then s.numeric_precision else g.numeric_precision end
           as numeric_precision,
       case when s.column_name is not null then s.numeric_scale else g.numeric_scale end
           as numeric_scale,
       case when s.column_name is not null then s.datetime_precision else g.datetime_precision end
           as datetime_precision,
       case when s.column_name is not null then s.is_nullable else not a.attnotnull end
           as is_nullable,
       r.oid as relid,
       a.attnum
from sim.user_relations r
join pg_catalog.pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped
left join sim.columns s
       on s.table_schema = r.schema_name and s.table_name = r.table_name
      and s.column_name = a.attname
cross join lateral (
    select case a.atttypid
               when 'boolean'::regtype then 'bit'
               when 'smallint'::regtype then 'smallint'
               when 'integer'::regtype then 'int'
               when 'bigint'::regtype then 'bigint'
               when 'numeric'::regtype then 'decimal'
               when 'double precision'::regtype then 'float'
               when 'real'::regtype then 'real'
               when 'character varying'::regtype then 'nvarchar'
               when 'text'::regtype then 'nvarchar'
               when 'character'::regtype then 'nchar'
               when 'date'::regtype then 'date'
               when 'timestamp without time zone'::regtype then 'datetime2'
               when 'timestamp with time zone'::regtype then 'datetimeoffset'
               when 'time without time zone'::regtype then 'time'
               when 'uuid'::regtype then 'uniqueidentifier'
               when 'bytea'::regtype then 'varbinary'
               else 'nvarchar'
           end as data_type,
           case
               when a.atttypid in ('character varying'::regtype, 'character'::regtype)
                   then case when a.atttypmod > 4 then a.atttypmod - 4 else -1 end
               when a.atttypid in ('text'::regtype, 'bytea'::regtype) then -1
               when a.atttypid in ('boolean'::regtype, 'smallint'::regtype, 'integer'::regtype,
                                   'bigint'::regtype, 'numeric'::regtype,
                                   'double precision'::regtype, 'real'::regtype, 'date'::regtype,
                                   'timestamp without time zone'::regtype,
                                   'timestamp with time zone'::regtype,
                                   'time without time zone'::regtype, 'uuid'::regtype)
                   then null
               else -1
           end as max_length,
           case a.atttypid
               when 'smallint'::regtype then 5
               when 'integer'::regtype then 10
               when 'bigint'::regtype then 19
               when 'numeric'::regtype then
                   case when a.atttypmod >= 4 then ((a.atttypmod - 4) >> 16) & 65535 else 38 end
               when 'double precision'::regtype then 53
               when 'real'::regtype then 24
           end as numeric_precision,
           case a.atttypid
               when 'smallint'::regtype then 0
               when 'integer'::regtype then 0
               when 'bigint'::regtype then 0
               when 'numeric'::regtype then
                   case when a.atttypmod >= 4 then (a.atttypmod - 4) & 65535 else 0 end
           end as numeric_scale,
           case a.atttypid
               when 'date'::regtype then 0
               when 'timestamp without time zone'::regtype then
                   case when a.atttypmod >= 0 then a.atttypmod else 6 end
               when 'timestamp with time zone'::regtype then
                   case when a.atttypmod >= 0 then a.atttypmod else 6 end
               when 'time without time zone'::regtype then
                   case when a.atttypmod >= 0 then a.atttypmod else 6 end
           end as datetime_precision
) g;

------------------------------------------------------------------------------------------------
-- Catalog views: sys
------------------------------------------------------------------------------------------------

create or replace view sys.change_tracking_databases as
select sim.db_id() as database_id,
       d.is_auto_cleanup_on,
       d.retention_period,
       (case d.retention_period_units when 1 then 'MINUTES' when 2 then 'HOURS' else 'DAYS' end)
           ::varchar(60) as retention_period_units_desc,
       d.retention_period_units::smallint as retention_period_units,
       (select max(t.cleanup_version) from ct.tables t) as max_cleanup_version
from ct.database d
where d.is_enabled;

create or replace view sys.change_tracking_tables as
select t.object_id,
       t.is_track_columns_updated_on,
       ct.min_valid_version(t.object_id) as min_valid_version,
       b.version as begin_version,
       t.cleanup_version
from ct.tables t
left join ct.tx b on b.txid = t.enable_txid;

-- A login without VIEW SERVER STATE (the session's sim.view_server_state = 'off') sees a
-- commit only after the next CHECKPOINT, as SQL Server documents: here, after a minute (its
-- default recovery interval).
create or replace view sys.dm_tran_commit_table as
select x.version as commit_ts,
       x.txid as xdes_id,
       x.version as commit_lbn,
       x.version as commit_csn,
       (x.commit_time at time zone 'UTC')::timestamp(3) as commit_time
from ct.tx x
where coalesce(current_setting('sim.view_server_state', true), '') <> 'off'
   or x.commit_time < now() - interval '1 minute';

-- HAS_PERMS_BY_NAME: every permission is granted but VIEW SERVER STATE to a session whose
-- sim.view_server_state is 'off'.
create or replace function sim.has_perms_by_name(securable text, securable_class text,
                                                 permission text, sub_securable text default null,
                                                 sub_securable_class text default null)
returns integer language sql stable as $$
    select case when upper(permission) = 'VIEW SERVER STATE'
                 and current_setting('sim.view_server_state', true) = 'off' then 0 else 1 end
$$;

create or replace view sys.databases as
select v.name::varchar(128) as name,
       v.database_id,
       null::integer as source_database_id,
       '\x01'::bytea as owner_sid,
       (select m.value::timestamp(3) from sim.meta m where m.key = 'created_at') as create_date,
       150::smallint as compatibility_level,
       'SQL_Latin1_General_CP1_CI_AS'::varchar(128) as collation_name,
       0::smallint as user_access,
       'MULTI_USER'::varchar(60) as user_access_desc,
       false as is_read_only,
       false as is_auto_close_on,
       false as is_auto_shrink_on,
       0::smallint as state,
       'ONLINE'::varchar(60) as state_desc,
       false as is_in_standby,
       false as is_cleanly_shutdown,
       false as is_supplemental_logging_enabled,
       v.snapshot::smallint as snapshot_isolation_state,
       (case when v.snapshot = 1 then 'ON' else 'OFF' end)::varchar(60)
           as snapshot_isolation_state_desc,
       v.rcsi as is_read_committed_snapshot_on,
       1::smallint as recovery_model,
       'FULL'::varchar(60) as recovery_model_desc
from (values ('master', 1, 1, false),
             ('tempdb', 2, 0, false),
             ('model', 3, 0, false),
             ('msdb', 4, 1, false),
             (coalesce(sim.db_name(), 'ods'), sim.db_id(), 1, true))
     as v(name, database_id, snapshot, rcsi);

create or replace view sys.schemas as
select s.name::varchar(128) as name, s.schema_id, s.principal_id
from (
    select 'dbo' as name, 1 as schema_id, 1 as principal_id
    union all select 'guest', 2, 2
    union all select 'INFORMATION_SCHEMA', 3, 3
    union all select 'sys', 4, 4
    union all
    select n.nspname::text, n.oid::integer, 1
    from pg_catalog.pg_namespace n
    where sim.is_user_schema(n.nspname) and n.nspname not in ('dbo', 'guest')
) s;

create or replace view sys.objects as
select o.name::varchar(128) as name,
       o.object_id,
       null::integer as principal_id,
       sim.schema_id(o.schema_name) as schema_id,
       o.parent_object_id,
       o.type::char(2) as type,
       o.type_desc::varchar(60) as type_desc,
       (select m.value::timestamp(3) from sim.meta m where m.key = 'created_at') as create_date,
       (select m.value::timestamp(3) from sim.meta m where m.key = 'created_at') as modify_date,
       false as is_ms_shipped,
       false as is_published,
       false as is_schema_published
from (
    select r.table_name as name, r.oid::integer as object_id, r.schema_name, 0 as parent_object_id,
           case when r.relkind in ('r', 'p', 'f') then 'U' else 'V' end as type,
           case when r.relkind in ('r', 'p', 'f') then 'USER_TABLE' else 'VIEW' end as type_desc
    from sim.user_relations r
    union all
    select con.conname::text, con.oid::integer, r.schema_name, r.oid::integer,
           case con.contype when 'p' then 'PK' when 'u' then 'UQ' when 'f' then 'F' else 'C' end,
           case con.contype when 'p' then 'PRIMARY_KEY_CONSTRAINT'
                            when 'u' then 'UNIQUE_CONSTRAINT'
                            when 'f' then 'FOREIGN_KEY_CONSTRAINT'
                            else 'CHECK_CONSTRAINT' end
    from pg_catalog.pg_constraint con
    join sim.user_relations r on r.oid = con.conrelid
    where con.contype in ('p', 'u', 'f', 'c')
) o;

create or replace view sys.tables as
select o.name, o.object_id, o.principal_id, o.schema_id, o.parent_object_id, o.type,
       o.type_desc, o.create_date, o.modify_date, o.is_ms_shipped, o.is_published,
       o.is_schema_published,
       0 as lob_data_space_id,
       null::integer as filestream_data_space_id,
       (select max(a.attnum)::integer from pg_catalog.pg_attribute a
         where a.attrelid = o.object_id::oid and a.attnum > 0) as max_column_id_used,
       false as lock_on_bulk_load,
       true as uses_ansi_nulls,
       false as is_replicated,
       false as has_replication_filter,
       false as is_merge_published,
       false as is_sync_tran_subscribed,
       false as has_unchecked_assembly_data,
       0 as text_in_row_limit,
       false as large_value_types_out_of_row,
       false as is_tracked_by_cdc,
       0::smallint as lock_escalation,
       'TABLE'::varchar(60) as lock_escalation_desc,
       false as is_filetable,
       false as is_memory_optimized,
       0::smallint as durability,
       'SCHEMA_AND_DATA'::varchar(60) as durability_desc,
       0::smallint as temporal_type,
       'NON_TEMPORAL_TABLE'::varchar(60) as temporal_type_desc,
       null::integer as history_table_id,
       false as is_remote_data_archive_enabled,
       false as is_external
from sys.objects o
where o.type = 'U';

------------------------------------------------------------------------------------------------
-- Catalog views: INFORMATION_SCHEMA
------------------------------------------------------------------------------------------------

create or replace view "INFORMATION_SCHEMA"."TABLES" as
select sim.db_name()::varchar(128) as "TABLE_CATALOG",
       r.schema_name::varchar(128) as "TABLE_SCHEMA",
       r.table_name::varchar(128) as "TABLE_NAME",
       (case when r.relkind in ('r', 'p', 'f') then 'BASE TABLE' else 'VIEW' end)::varchar(10)
           as "TABLE_TYPE"
from sim.user_relations r;

create or replace view "INFORMATION_SCHEMA"."COLUMNS" as
select sim.db_name()::varchar(128) as "TABLE_CATALOG",
       c.table_schema::varchar(128) as "TABLE_SCHEMA",
       c.table_name::varchar(128) as "TABLE_NAME",
       c.column_name::varchar(128) as "COLUMN_NAME",
       c.ordinal as "ORDINAL_POSITION",
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)::varchar(4000) as "COLUMN_DEFAULT",
       (case when c.is_nullable then 'YES' else 'NO' end)::varchar(3) as "IS_NULLABLE",
       c.data_type::varchar(128) as "DATA_TYPE",
       c.max_length as "CHARACTER_MAXIMUM_LENGTH",
       (case when c.max_length = -1 then -1
             when c.data_type in ('nvarchar', 'nchar') then c.max_length * 2
             else c.max_length end) as "CHARACTER_OCTET_LENGTH",
       c.numeric_precision::smallint as "NUMERIC_PRECISION",
       (case when c.data_type in ('float', 'real') then 2
             when c.numeric_precision is not null then 10 end)::smallint
           as "NUMERIC_PRECISION_RADIX",
       c.numeric_scale as "NUMERIC_SCALE",
       c.datetime_precision::smallint as "DATETIME_PRECISION",
       null::varchar(128) as "CHARACTER_SET_CATALOG",
       null::varchar(128) as "CHARACTER_SET_SCHEMA",
       (case when c.data_type in ('nvarchar', 'nchar') then 'UNICODE'
             when c.data_type in ('varchar', 'char') then 'iso_1' end)::varchar(128)
           as "CHARACTER_SET_NAME",
       null::varchar(128) as "COLLATION_CATALOG",
       null::varchar(128) as "COLLATION_SCHEMA",
       (case when c.data_type in ('nvarchar', 'nchar', 'varchar', 'char')
             then 'SQL_Latin1_General_CP1_CI_AS' end)::varchar(128) as "COLLATION_NAME",
       null::varchar(128) as "DOMAIN_CATALOG",
       null::varchar(128) as "DOMAIN_SCHEMA",
       null::varchar(128) as "DOMAIN_NAME"
from sim.column_types c
left join pg_catalog.pg_attrdef ad on ad.adrelid = c.relid and ad.adnum = c.attnum;

create or replace view "INFORMATION_SCHEMA"."TABLE_CONSTRAINTS" as
select sim.db_name()::varchar(128) as "CONSTRAINT_CATALOG",
       r.schema_name::varchar(128) as "CONSTRAINT_SCHEMA",
       con.conname::varchar(128) as "CONSTRAINT_NAME",
       sim.db_name()::varchar(128) as "TABLE_CATALOG",
       r.schema_name::varchar(128) as "TABLE_SCHEMA",
       r.table_name::varchar(128) as "TABLE_NAME",
       (case con.contype when 'p' then 'PRIMARY KEY' when 'u' then 'UNIQUE'
                         when 'f' then 'FOREIGN KEY' else 'CHECK' end)::varchar(11)
           as "CONSTRAINT_TYPE",
       'NO'::varchar(2) as "IS_DEFERRABLE",
       'NO'::varchar(2) as "INITIALLY_DEFERRED"
from pg_catalog.pg_constraint con
join sim.user_relations r on r.oid = con.conrelid
where con.contype in ('p', 'u', 'f', 'c');

create or replace view "INFORMATION_SCHEMA"."KEY_COLUMN_USAGE" as
select sim.db_name()::varchar(128) as "CONSTRAINT_CATALOG",
       r.schema_name::varchar(128) as "CONSTRAINT_SCHEMA",
       con.conname::varchar(128) as "CONSTRAINT_NAME",
       sim.db_name()::varchar(128) as "TABLE_CATALOG",
       r.schema_name::varchar(128) as "TABLE_SCHEMA",
       r.table_name::varchar(128) as "TABLE_NAME",
       a.attname::varchar(128) as "COLUMN_NAME",
       k.n::integer as "ORDINAL_POSITION"
from pg_catalog.pg_constraint con
join sim.user_relations r on r.oid = con.conrelid
cross join lateral unnest(con.conkey) with ordinality as k(attnum, n)
join pg_catalog.pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum
where con.contype in ('p', 'u', 'f');
