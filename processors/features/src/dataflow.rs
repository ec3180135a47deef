//! The engines on timely dataflow workers: bars are exchanged by instrument
//! so each worker owns a disjoint set of engines, and every worker's rows
//! are gathered at the end. Used offline (`autotrain features`) and by the
//! benchmark; the online path runs the same engines inside the Kafka runner
//! (see docs/features.md for what runs where and why).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use autotrain_schemas::{Bar, FeatureVector};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::contract::Contract;
use crate::engine::{Engine, Point, Row};
use crate::processor::to_vector;

/// What a run produced.
#[derive(Debug, Default)]
pub struct Materialised {
    /// Every published row (with `emit`), per instrument in emission order;
    /// instruments in no particular order.
    pub rows: Vec<FeatureVector>,
    /// Rows published (also without `emit`).
    pub published: u64,
    /// Heap bytes of each instrument's engine at the end.
    pub engine_bytes: Vec<(String, usize)>,
}

/// Bars as the dataflow takes them: instruments as small ids (cheap to
/// exchange and to key engines) with their names on the side.
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    /// (instrument `exchange:SYMBOL`, timeframe) per id.
    pub names: Vec<(String, String)>,
    pub points: Vec<(u32, Point)>,
}

impl Prepared {
    pub fn from_bars(bars: &[Bar]) -> Self {
        let mut ids: FxHashMap<(&str, &str, &str), u32> = FxHashMap::default();
        let mut p = Prepared {
            names: Vec::new(),
            points: Vec::with_capacity(bars.len()),
        };
        for bar in bars {
            let key = (
                bar.exchange.as_str(),
                bar.symbol.as_str(),
                bar.timeframe.as_str(),
            );
            let id = match ids.get(&key) {
                Some(id) => *id,
                None => {
                    p.names.push((bar.instrument(), bar.timeframe.clone()));
                    let id = (p.names.len() - 1) as u32;
                    ids.insert(key, id);
                    id
                }
            };
            p.points.push((
                id,
                Point {
                    ts: bar.ts,
                    close: bar.close,
                    volume: bar.volume,
                    revision: bar.revision,
                },
            ));
        }
        p
    }
}

/// Computes the features of `bars` (in the given order) on `workers`
/// timely worker threads. With `emit = false` rows are counted, not kept.
pub fn run(
    contract: &Contract,
    bars: &[Bar],
    workers: usize,
    emit: bool,
) -> Result<Materialised, String> {
    run_prepared(contract, Prepared::from_bars(bars), workers, emit)
}

/// [`run`] over bars already [`Prepared`].
pub fn run_prepared(
    contract: &Contract,
    prepared: Prepared,
    workers: usize,
    emit: bool,
) -> Result<Materialised, String> {
    let Prepared {
        names,
        points: input_points,
    } = prepared;
    let contract = Arc::new(contract.clone());
    let names = Arc::new(names);
    let feed = Arc::new(input_points);
    let collected: Arc<Mutex<Materialised>> = Arc::default();
    let published = Arc::new(AtomicU64::new(0));
    let (names2, collected2, published2) = (names.clone(), collected.clone(), published.clone());
    timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<(u32, Point)>>>::new();
        let probe = ProbeHandle::new();
        let (contract, names) = (contract.clone(), names2.clone());
        let (collected, published) = (collected2.clone(), published2.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Exchange::new(|x: &(u32, Point)| u64::from(x.0)),
                    "features",
                    move |_, _| {
                        let mut engines: FxHashMap<u32, Engine> = FxHashMap::default();
                        let mut kept: Vec<FeatureVector> = Vec::new();
                        let mut count = 0u64;
                        let mut reported = false;
                        move |(input, frontier), _output| {
                            input.for_each_stamp(|_cap, data| {
                                for batch in data {
                                    for (id, point) in batch.drain(..) {
                                        let engine = engines
                                            .entry(id)
                                            .or_insert_with(|| Engine::new(contract.clone()));
                                        let (instrument, timeframe) = &names[id as usize];
                                        engine.upsert_with(point, |ts, revision, values| {
                                            count += 1;
                                            if emit {
                                                kept.push(to_vector(
                                                    &contract,
                                                    instrument,
                                                    timeframe,
                                                    &Row {
                                                        ts,
                                                        revision,
                                                        values: values.to_vec(),
                                                    },
                                                ));
                                            }
                                        });
                                    }
                                }
                            });
                            if frontier.is_empty() && !reported {
                                reported = true;
                                let mut c = collected.lock().unwrap_or_else(|p| p.into_inner());
                                c.rows.append(&mut kept);
                                for (id, e) in engines.drain() {
                                    c.engine_bytes
                                        .push((names[id as usize].0.clone(), e.heap_bytes()));
                                }
                                published.fetch_add(count, Ordering::Relaxed);
                            }
                        }
                    },
                )
                .probe_with(&probe);
        });
        // Each worker introduces the instruments it owns under the exchange
        // function, in input order, so every instrument's bars keep their
        // order and nothing crosses threads on the way in.
        let (me, peers) = (worker.index() as u64, worker.peers() as u64);
        for item in feed.iter().filter(|(id, _)| u64::from(*id) % peers == me) {
            input.send(*item);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })?;
    let mut m = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
    m.published = published.load(Ordering::Relaxed);
    Ok(m)
}
