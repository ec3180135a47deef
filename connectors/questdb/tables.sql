-- QuestDB tables for the autotrain sink. Create them once before the
-- first run; ILP would otherwise create them without deduplication.
-- DEDUP UPSERT KEYS make re-delivered batches (after a crash, the sink
-- re-sends rows it had not committed) overwrite instead of duplicating,
-- and let a later revision of a bar replace the earlier one.

CREATE TABLE IF NOT EXISTS market_bars (
  exchange SYMBOL,
  symbol SYMBOL,
  timeframe SYMBOL,
  open DOUBLE,
  high DOUBLE,
  low DOUBLE,
  close DOUBLE,
  volume DOUBLE,
  revision LONG,
  checksum VARCHAR,
  source VARCHAR,
  ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH WAL
  DEDUP UPSERT KEYS(ts, exchange, symbol, timeframe);

CREATE TABLE IF NOT EXISTS market_flags (
  instrument SYMBOL,
  timeframe SYMBOL,
  kind SYMBOL,
  severity SYMBOL,
  state SYMBOL,
  flag_id VARCHAR,
  detail VARCHAR,
  gap_start TIMESTAMP,
  gap_end TIMESTAMP,
  missing_bars LONG,
  actor VARCHAR,
  decided_at TIMESTAMP,
  ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH WAL
  DEDUP UPSERT KEYS(ts, flag_id, state);

-- One column per feature of the contract: ILP adds them (DOUBLE) as they
-- first arrive; a feature whose window is not yet full is null.
CREATE TABLE IF NOT EXISTS features (
  instrument SYMBOL,
  timeframe SYMBOL,
  contract_version SYMBOL,
  bar_revision LONG,
  ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH WAL
  DEDUP UPSERT KEYS(ts, instrument, timeframe);

-- State probabilities as p0, p1, … (ILP adds as many as the model has).
CREATE TABLE IF NOT EXISTS regimes (
  instrument SYMBOL,
  timeframe SYMBOL,
  model_key SYMBOL,
  model_version LONG,
  regime LONG,
  loglik DOUBLE,
  ts TIMESTAMP
) TIMESTAMP(ts) PARTITION BY MONTH WAL
  DEDUP UPSERT KEYS(ts, instrument, timeframe, model_key);
