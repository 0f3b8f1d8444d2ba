//! Metrics of the consume loop, shared by every consumer service and
//! labelled by consumer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    consumer: &'static str,
    outcome: &'static str,
}

/// The metric families, registered once per process.
#[derive(Debug, Clone)]
pub struct ConsumeFamilies {
    messages: Family<OutcomeLabels, Counter>,
    dead_letters: Family<ConsumerLabels, Counter>,
    batch_size: Family<ConsumerLabels, Histogram>,
    handle_seconds: Family<ConsumerLabels, Histogram>,
    settle_seconds: Family<ConsumerLabels, Histogram>,
}

impl ConsumeFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let families = Self {
            messages: Family::default(),
            dead_letters: Family::default(),
            batch_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 12))
            }),
            handle_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            settle_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
        };
        registry.register(
            "hookmesh_consumer_messages",
            "Messages settled by each consumer, by outcome (done, retry, dead_letter)",
            families.messages.clone(),
        );
        registry.register(
            "hookmesh_consumer_dead_letters",
            "Messages each consumer moved to the dead-letter stream",
            families.dead_letters.clone(),
        );
        registry.register(
            "hookmesh_consumer_batch_size",
            "Messages handed to each consumer's handler at once",
            families.batch_size.clone(),
        );
        registry.register(
            "hookmesh_consumer_handle_duration_seconds",
            "Time each consumer's handler took per batch",
            families.handle_seconds.clone(),
        );
        registry.register(
            "hookmesh_consumer_settle_duration_seconds",
            "Time each consumer took per batch to send its acks, naks and dead letters after the handler",
            families.settle_seconds.clone(),
        );
        families
    }

    /// Handles for one consumer.
    pub fn consumer(&self, consumer: &'static str) -> ConsumeMetrics {
        ConsumeMetrics {
            consumer,
            families: self.clone(),
        }
    }
}

/// One consumer's metrics.
#[derive(Debug, Clone)]
pub struct ConsumeMetrics {
    consumer: &'static str,
    families: ConsumeFamilies,
}

impl ConsumeMetrics {
    pub(crate) fn handled(&self, batch: usize, seconds: f64) {
        let labels = ConsumerLabels {
            consumer: self.consumer,
        };
        self.families
            .batch_size
            .get_or_create(&labels)
            .observe(batch as f64);
        self.families
            .handle_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub(crate) fn settled(&self, outcome: &'static str, count: u64) {
        if count > 0 {
            self.families
                .messages
                .get_or_create(&OutcomeLabels {
                    consumer: self.consumer,
                    outcome,
                })
                .inc_by(count);
        }
    }

    pub(crate) fn settled_batch(&self, seconds: f64) {
        self.families
            .settle_seconds
            .get_or_create(&ConsumerLabels {
                consumer: self.consumer,
            })
            .observe(seconds);
    }

    pub(crate) fn dead_lettered(&self) {
        self.families
            .dead_letters
            .get_or_create(&ConsumerLabels {
                consumer: self.consumer,
            })
            .inc();
    }
}
