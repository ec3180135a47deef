//! [`poll_stream`]: fetch a stream from its watermark, publish, advance.
//!
//! Each round asks for the next page after the watermark (never before it,
//! so a backfill and the live polling that follows it never fetch the same
//! range), normalises it into a [`Chunk`](crate::chunk::Chunk), skips it if the same content was
//! already published, sends its bars to `market.bars.raw` with
//! content-derived event ids, waits for the broker's acknowledgement, and
//! only then moves the watermark. A crash between the two re-fetches the
//! page after a restart; the repeat carries the same event ids and is
//! dropped downstream. Without an end time the poller goes on live: once
//! caught up it waits `poll_interval` and asks for newly closed bars.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use autotrain_kafka::{OutRecord, Producer};
use autotrain_schemas::SourceWatermark;
use autotrain_topics::MARKET_BARS_RAW;
use serde::Serialize;

use crate::chunk::normalize;
use crate::endpoint::Endpoint;
use crate::error::FetchError;
use crate::fetcher::Fetcher;
use crate::stream::StreamId;
use crate::watermark::publish_watermark;

/// Chunk addresses remembered per poller.
const REMEMBERED_CHUNKS: usize = 4_096;
/// Pages in a row that bring nothing usable (all rows outside the asked
/// range, or a chunk already published) before a backfill gives up.
const MAX_STALLED: u32 = 20;

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub stream: StreamId,
    pub endpoint: Endpoint,
    /// First bar wanted (used when the stream has no watermark yet, or an
    /// earlier one).
    pub from_ms: i64,
    /// Stop before this bar start; `None` polls live until shutdown.
    pub to_ms: Option<i64>,
    /// Pause between live polls once caught up (and after a stalled page).
    pub poll_interval: Duration,
    /// An empty page this close to now is not taken as "no bars there"
    /// (the exchange may not have published them yet).
    pub settle_ms: i64,
    /// Live polls re-read this many bars before the watermark, so an
    /// exchange's late revision of its last bars is picked up (and goes
    /// downstream as a correction); unchanged re-reads are discarded by
    /// their content address.
    pub revisit_bars: i64,
}

/// What one poller did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub pages: u64,
    pub bars_published: u64,
    /// Bars re-published because the exchange changed them.
    pub bars_revised: u64,
    pub chunks_published: u64,
    /// Chunks whose content was already published (not sent again).
    pub chunks_discarded: u64,
    /// Pages with rows but none in the asked range.
    pub pages_off_range: u64,
    pub rows_outside_range: u64,
    pub rows_repeated: u64,
    pub open_bars_dropped: u64,
    pub pages_out_of_order: u64,
    /// Where the stream started this run, and where it stands now.
    pub resumed_from: i64,
    pub next_ts: i64,
}

fn align_up(ts: i64, step: i64) -> i64 {
    ts.div_euclid(step) * step + if ts.rem_euclid(step) == 0 { 0 } else { step }
}

/// Runs one stream until its end time (or, live, until `shutdown`).
/// `watermark` is the stream's newest watermark, if any; `now_ms` is the
/// clock (wall time in production, fixed in tests).
pub async fn poll_stream(
    config: &PollConfig,
    fetcher: &Fetcher,
    producer: &Producer,
    watermark: Option<SourceWatermark>,
    now_ms: Arc<dyn Fn() -> i64 + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) -> Result<StreamReport, FetchError> {
    let stream = &config.stream;
    let step = stream.step_ms;
    config.endpoint.supports(stream)?;
    let start = align_up(config.from_ms, step);
    let mut wm = match watermark {
        Some(w) if w.next_ts >= start => w,
        _ => SourceWatermark {
            stream: stream.key(),
            next_ts: start,
            bars: 0,
            chunks: 0,
            last_chunk_sha256: None,
            source: config.endpoint.describe(),
        },
    };
    let mut report = StreamReport {
        stream: stream.key(),
        resumed_from: wm.next_ts,
        next_ts: wm.next_ts,
        ..StreamReport::default()
    };
    let mut seen: HashSet<String> = wm.last_chunk_sha256.iter().cloned().collect();
    let mut seen_order: VecDeque<String> = seen.iter().cloned().collect();
    // Content hash of recently published bars, by ts (for revisions).
    let mut recent: BTreeMap<i64, String> = BTreeMap::new();
    let mut stalled = 0u32;
    let instrument = stream.instrument();
    let live = config.to_ms.is_none();
    tokio::pin!(shutdown);
    tracing::info!(stream = %stream.key(), from = wm.next_ts, to = ?config.to_ms, "polling");

    loop {
        if stalled > 0 {
            if !live && stalled > MAX_STALLED {
                return Err(FetchError::Malformed(format!(
                    "{}: {stalled} pages in a row brought nothing new at {}",
                    config.endpoint.describe(),
                    wm.next_ts
                )));
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(config.poll_interval) => {}
            }
        }
        let now = now_ms();
        // Bars that have closed by now, and (backfill) before the end.
        let closed_end = now.div_euclid(step) * step;
        let horizon = config.to_ms.map_or(closed_end, |t| t.min(closed_end));
        let revisit = if live { config.revisit_bars.max(0) } else { 0 };
        let fetch_from = (wm.next_ts - revisit * step).max(start);
        if wm.next_ts >= horizon && (revisit == 0 || fetch_from >= horizon) {
            if config.to_ms.is_some_and(|t| wm.next_ts >= t) {
                break;
            }
            stalled = 1;
            continue;
        }
        let page_end = horizon
            .min(fetch_from + config.endpoint.page_bars(stream) * step)
            .max(fetch_from + step);
        let rows = tokio::select! {
            _ = &mut shutdown => break,
            rows = fetcher.page(&config.endpoint, stream, fetch_from, page_end) => rows?,
        };
        report.pages += 1;
        let row_count = rows.len();
        let chunk = normalize(rows, fetch_from, page_end, now, step);
        report.rows_outside_range += chunk.outside as u64;
        report.rows_repeated += chunk.repeated as u64;
        report.open_bars_dropped += chunk.open as u64;
        report.pages_out_of_order += u64::from(chunk.out_of_order);

        if chunk.bars.is_empty() && row_count > 0 && chunk.outside == row_count {
            report.pages_off_range += 1;
            stalled += 1;
            tracing::warn!(stream = %stream.key(), from = fetch_from, to = page_end, "page holds no bar of the asked range; asking again");
            continue;
        }
        if !chunk.bars.is_empty() && seen.contains(&chunk.sha256) {
            report.chunks_discarded += 1;
            stalled += 1;
            tracing::debug!(stream = %stream.key(), sha256 = %chunk.sha256, "chunk already published; discarded");
            continue;
        }
        let settled = page_end + config.settle_ms <= now;
        let next = match chunk.bars.last() {
            // Nothing there: a hole in the exchange's history, unless it is
            // so recent the exchange may still publish it.
            None if settled => page_end.max(wm.next_ts),
            None => {
                stalled = 1;
                continue;
            }
            Some(last) if settled => page_end.max(last.ts + step).max(wm.next_ts),
            Some(last) => (last.ts + step).max(wm.next_ts),
        };
        let mut pending = Vec::with_capacity(chunk.bars.len());
        let mut published = 0u64;
        for bar in &chunk.bars {
            let hash = crate::chunk::content_hash(std::slice::from_ref(bar));
            if bar.ts < wm.next_ts {
                match recent.get(&bar.ts) {
                    Some(known) if *known == hash => continue,
                    Some(_) => report.bars_revised += 1,
                    // Published before this run: taken as the reference
                    // for later revisions.
                    None => {
                        recent.insert(bar.ts, hash);
                        continue;
                    }
                }
            }
            let record = OutRecord::from_content(MARKET_BARS_RAW, &instrument, bar)?;
            pending.push(producer.enqueue(&record).await?);
            recent.insert(bar.ts, hash);
            published += 1;
        }
        for p in pending {
            p.confirm().await?;
        }
        while recent.len() as i64 > (2 * revisit).max(1) {
            recent.pop_first();
        }
        report.bars_published += published;
        report.chunks_published += 1;
        wm.bars += published as i64;
        wm.chunks += 1;
        wm.last_chunk_sha256 = Some(chunk.sha256.clone());
        seen.insert(chunk.sha256.clone());
        seen_order.push_back(chunk.sha256);
        if seen_order.len() > REMEMBERED_CHUNKS {
            if let Some(old) = seen_order.pop_front() {
                seen.remove(&old);
            }
        }
        stalled = u32::from(next == wm.next_ts && live);
        wm.next_ts = next;
        wm.source = config.endpoint.describe();
        publish_watermark(producer, &wm).await?;
        report.next_ts = wm.next_ts;
    }
    Ok(report)
}
