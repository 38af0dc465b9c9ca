-- Market-data tables captured by Debezium (publication cdc_pub, sql/002_publication.sql).
-- Re-runnable: every statement is IF NOT EXISTS or guarded by a catalog check.
--
-- Types: prices numeric(30,8) and quantities numeric(38,8) hold every Binance value exactly (Binance
-- sends at most 8 decimals; 22 integer digits for prices, 30 for volumes). Times are timestamptz
-- built from Binance's epoch milliseconds.
--
-- REPLICA IDENTITY: DEFAULT (the primary key) everywhere but `trades`, chosen per table below. Under
-- DEFAULT an UPDATE event carries the full new row and a DELETE event carries the key columns only,
-- which is all the sink needs when its Cassandra key derives from the source key. FULL would make
-- PostgreSQL log whole old rows on every update for no reader; NOTHING would strip the key from
-- DELETE events.
-- No column here is large enough to be TOASTed, so Debezium never has to report an unchanged-TOAST
-- placeholder under DEFAULT.

-- 24h rolling-window statistics, one row per (symbol, Binance closeTime): history, append-mostly.
-- REPLICA IDENTITY DEFAULT: the key names the row; deletes (retention pruning) need only the key.
CREATE TABLE IF NOT EXISTS ticker_24h (
    symbol               text           NOT NULL,
    event_time           timestamptz    NOT NULL,  -- Binance closeTime
    price_change         numeric(30,8),
    price_change_percent numeric(20,8),
    weighted_avg_price   numeric(30,8),
    prev_close_price     numeric(30,8),
    last_price           numeric(30,8),
    last_qty             numeric(38,8),
    bid_price            numeric(30,8),
    bid_qty              numeric(38,8),
    ask_price            numeric(30,8),
    ask_qty              numeric(38,8),
    open_price           numeric(30,8),
    high_price           numeric(30,8),
    low_price            numeric(30,8),
    volume               numeric(38,8),
    quote_volume         numeric(38,8),
    open_time            timestamptz,
    close_time           timestamptz,
    first_id             bigint,
    last_id              bigint,
    trade_count          bigint,
    PRIMARY KEY (symbol, event_time)
);

-- Candlesticks; the still-open kline is updated in place as it changes, closed ones no longer change.
-- REPLICA IDENTITY DEFAULT: (symbol, interval, open_time) names the candle; updates carry the new row.
CREATE TABLE IF NOT EXISTS klines (
    symbol                 text           NOT NULL,
    interval               text           NOT NULL,
    open_time              timestamptz    NOT NULL,
    close_time             timestamptz,
    open                   numeric(30,8),
    high                   numeric(30,8),
    low                    numeric(30,8),
    close                  numeric(30,8),
    volume                 numeric(38,8),
    quote_volume           numeric(38,8),
    number_of_trades       int,
    taker_buy_base_volume  numeric(38,8),
    taker_buy_quote_volume numeric(38,8),
    PRIMARY KEY (symbol, interval, open_time)
);

-- The current top-N levels per side, updated in place when a level's price or quantity changes;
-- levels beyond the latest snapshot's depth are deleted. last_update_id/snapshot_time record the
-- snapshot that last changed the level.
-- REPLICA IDENTITY DEFAULT: a level is named by (symbol, side, level); its DELETE event needs only that.
CREATE TABLE IF NOT EXISTS order_book (
    symbol         text          NOT NULL,
    side           text          NOT NULL CHECK (side IN ('bid', 'ask')),
    level          smallint      NOT NULL CHECK (level >= 0),
    price          numeric(30,8) NOT NULL,
    quantity       numeric(38,8) NOT NULL,
    last_update_id bigint,
    snapshot_time  timestamptz,
    PRIMARY KEY (symbol, side, level)
);

-- Recent trades: immutable once written (inserted with ON CONFLICT DO NOTHING).
-- REPLICA IDENTITY FULL: Cassandra partitions trades by (symbol, UTC day of trade_time), and trade_time
-- is not in this key, so a DELETE event must carry the whole old row to address the Cassandra row.
-- Trades are never updated, so FULL costs WAL only on (rare) deletes.
CREATE TABLE IF NOT EXISTS trades (
    symbol         text          NOT NULL,
    trade_id       bigint        NOT NULL,
    price          numeric(30,8) NOT NULL,
    qty            numeric(38,8) NOT NULL,
    quote_qty      numeric(38,8),
    trade_time     timestamptz   NOT NULL,
    is_buyer_maker boolean,
    is_best_match  boolean,
    PRIMARY KEY (symbol, trade_id)
);

-- Written by Debezium's heartbeat.action.query (an upsert of row id 1, connectors/postgres.json) so a
-- quiet database still produces WAL for the slot to confirm, and WAL behind the slot can be recycled.
-- REPLICA IDENTITY DEFAULT: a single row named by id.
CREATE TABLE IF NOT EXISTS cdc_heartbeat (
    id int PRIMARY KEY,
    ts timestamptz
);
INSERT INTO cdc_heartbeat (id, ts) VALUES (1, now()) ON CONFLICT (id) DO NOTHING;

-- Debezium signal table (signal.data.collection=public.cdc_signal): ad-hoc snapshots etc.
-- REPLICA IDENTITY DEFAULT: Debezium only reads inserts from it.
CREATE TABLE IF NOT EXISTS cdc_signal (
    id   varchar(64)   PRIMARY KEY,
    type varchar(32)   NOT NULL,
    data varchar(2048)
);

-- Re-assert the documented replica identity if someone changed it (only when it differs, so a re-run
-- takes no lock and writes no catalog row). 'd' = DEFAULT, 'f' = FULL.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ticker_24h', 'klines', 'order_book', 'cdc_heartbeat', 'cdc_signal']
    LOOP
        IF (SELECT relreplident FROM pg_class WHERE oid = format('public.%I', t)::regclass) <> 'd' THEN
            EXECUTE format('ALTER TABLE public.%I REPLICA IDENTITY DEFAULT', t);
        END IF;
    END LOOP;
    IF (SELECT relreplident FROM pg_class WHERE oid = 'public.trades'::regclass) <> 'f' THEN
        ALTER TABLE public.trades REPLICA IDENTITY FULL;
    END IF;
END
$$;
