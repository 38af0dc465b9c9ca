-- Publication cdc_pub (read by Debezium's pgoutput plugin) for exactly the tables of 001_tables.sql,
-- publishing inserts, updates, deletes and truncates. Created if missing; if it exists with another
-- table list, a row filter or other operations it is brought back to this definition (only then, so a re-run is a
-- no-op). A FOR ALL TABLES publication cannot be narrowed and is reported instead.
DO $$
DECLARE
    wanted text[] := ARRAY['cdc_heartbeat', 'cdc_signal', 'klines', 'order_book', 'ticker_24h', 'trades'];
    pub    pg_publication%ROWTYPE;
    have   text[];
BEGIN
    SELECT * INTO pub FROM pg_publication WHERE pubname = 'cdc_pub';
    IF NOT FOUND THEN
        CREATE PUBLICATION cdc_pub
            FOR TABLE public.ticker_24h, public.klines, public.order_book, public.trades,
                      public.cdc_heartbeat, public.cdc_signal
            WITH (publish = 'insert, update, delete, truncate');
        RETURN;
    END IF;
    IF pub.puballtables THEN
        RAISE EXCEPTION 'publication cdc_pub is FOR ALL TABLES; drop it (DROP PUBLICATION cdc_pub) and re-run cdc init';
    END IF;
    SELECT coalesce(array_agg(tablename::text ORDER BY tablename), '{}') INTO have
      FROM pg_publication_tables WHERE pubname = 'cdc_pub' AND schemaname = 'public';
    IF have IS DISTINCT FROM wanted
       OR EXISTS (SELECT 1 FROM pg_publication_tables
                   WHERE pubname = 'cdc_pub' AND (schemaname <> 'public' OR rowfilter IS NOT NULL)) THEN
        ALTER PUBLICATION cdc_pub SET TABLE public.ticker_24h, public.klines, public.order_book, public.trades,
                                            public.cdc_heartbeat, public.cdc_signal;
    END IF;
    IF NOT (pub.pubinsert AND pub.pubupdate AND pub.pubdelete AND pub.pubtruncate) THEN
        ALTER PUBLICATION cdc_pub SET (publish = 'insert, update, delete, truncate');
    END IF;
END
$$;
