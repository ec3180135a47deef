//! [`Producer`]: sends encoded records keyed by instrument / model /
//! strategy, with their event id header, and reports delivery.

use std::time::Duration;

use autotrain_schemas::Payload;
use autotrain_topics::Topic;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use crate::error::KafkaError;
use crate::link::LinkContext;
use crate::record::{OutRecord, EVENT_ID_HEADER, PROGRESS_HEADER};
use crate::settings::ClientSettings;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

pub struct Producer {
    inner: FutureProducer<LinkContext>,
    settings: ClientSettings,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Producer({})", self.settings.bootstrap)
    }
}

/// A send in flight; await [`Pending::confirm`] for the broker's answer.
pub struct Pending {
    topic: String,
    future: DeliveryFuture,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.topic)
    }
}

impl Pending {
    pub async fn confirm(self) -> Result<Delivered, KafkaError> {
        match self.future.await {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(KafkaError::Delivery {
                topic: self.topic,
                reason: e.to_string(),
            }),
            Err(_) => Err(KafkaError::Delivery {
                topic: self.topic,
                reason: "producer closed before delivery was reported".into(),
            }),
        }
    }
}

impl Producer {
    pub fn new(settings: &ClientSettings) -> Result<Self, KafkaError> {
        Ok(Producer {
            inner: settings
                .producer_config()
                .create_with_context(settings.context())?,
            settings: settings.clone(),
        })
    }

    /// A transactional producer with `transactional.id` = `id`, its
    /// transactions initialised (which fences an older instance with the
    /// same id and aborts what it left open). Blocking.
    pub fn transactional(
        settings: &ClientSettings,
        id: &str,
        transaction_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let mut config = settings.producer_config();
        config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set(
                "transaction.timeout.ms",
                transaction_timeout.as_millis().to_string(),
            )
            // The coordinator answers CONCURRENT_TRANSACTIONS while it
            // writes the previous transaction's markers; librdkafka retries
            // after retry.backoff.ms (default 100 ms, which made every
            // commit take 100 ms). Retry quickly instead.
            .set("retry.backoff.ms", "5")
            .set("retry.backoff.max.ms", "200")
            // A send cannot outlive its transaction.
            .set(
                "message.timeout.ms",
                transaction_timeout.as_millis().to_string(),
            );
        let inner: FutureProducer<LinkContext> = config.create_with_context(settings.context())?;
        inner
            .init_transactions(transaction_timeout.max(Duration::from_secs(30)))
            .map_err(|e| KafkaError::Fenced(format!("init transactions of {id}: {e}")))?;
        Ok(Producer {
            inner,
            settings: settings.clone(),
        })
    }

    /// The client (cheap to clone; transaction calls block, so callers
    /// move a clone to a blocking thread).
    pub fn client(&self) -> &FutureProducer<LinkContext> {
        &self.inner
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Hands a record to the client; waits while its queue is full.
    pub async fn enqueue(&self, record: &OutRecord) -> Result<Pending, KafkaError> {
        let topic = self.settings.physical(&record.topic);
        let id = record.event_id.to_hex();
        let progress = record.progress.map(|t| t.to_string());
        loop {
            let mut headers = OwnedHeaders::new().insert(Header {
                key: EVENT_ID_HEADER,
                value: Some(id.as_bytes()),
            });
            if let Some(t) = &progress {
                headers = headers.insert(Header {
                    key: PROGRESS_HEADER,
                    value: Some(t.as_bytes()),
                });
            }
            let fr = FutureRecord::to(&topic)
                .key(&record.key[..])
                .payload(&record.payload[..])
                .headers(headers);
            match self.inner.send_result(fr) {
                Ok(future) => {
                    return Ok(Pending {
                        topic: topic.clone(),
                        future,
                    })
                }
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivered, KafkaError> {
        let sent = self.enqueue(record).await?.confirm().await;
        sent.map_err(|e| self.explain(e))
    }

    /// A failed delivery named by the producer's fatal error when it has
    /// one: after one, librdkafka purges its queue, and "purged in queue"
    /// alone does not say that the broker refused the producer an id (an
    /// idempotent producer needs Write on a topic it writes to).
    fn explain(&self, e: KafkaError) -> KafkaError {
        match (e, self.inner.client().fatal_error()) {
            (KafkaError::Delivery { topic, .. }, Some((code, reason))) => {
                let hint = if code == RDKafkaErrorCode::ClusterAuthorizationFailed {
                    " (this principal may write to no topic: an idempotent producer needs Write on the topics it writes to)"
                } else {
                    ""
                };
                KafkaError::Delivery {
                    topic,
                    reason: format!("{code:?}: {reason}{hint}"),
                }
            }
            (e, _) => e,
        }
    }

    /// Sends records in order and waits for every acknowledgement: all are
    /// handed to the client first, so they go out in one batch (a reader
    /// waiting for them sees them one linger later, not one per record).
    pub async fn send_all(&self, records: &[OutRecord]) -> Result<Vec<Delivered>, KafkaError> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.enqueue(record).await?);
        }
        let mut delivered = Vec::with_capacity(pending.len());
        for sent in pending {
            delivered.push(sent.confirm().await.map_err(|e| self.explain(e))?);
        }
        Ok(delivered)
    }

    /// Encodes and sends a payload from outside content (id from content).
    pub async fn publish<T: Payload>(
        &self,
        topic: Topic<T>,
        key: &str,
        value: &T,
    ) -> Result<Delivered, KafkaError> {
        self.send(&OutRecord::from_content(topic, key, value)?)
            .await
    }

    /// Waits until everything enqueued is delivered or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        Ok(self.inner.flush(timeout)?)
    }
}
