//! Job consumers belong to the scheduler: a consumer made by anyone else under a host's name,
//! filtering another subject (so the host would silently get no jobs, or another host's), is
//! replaced before a run dispatches to that host.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use flotilla_protocol::nats::consumer_config;
use flotilla_protocol::subjects;
use flotilla_scheduler::transport::bus::Bus;

#[tokio::test]
async fn a_hijacked_job_consumer_is_made_again_with_the_hosts_own_filter() {
    let nats = support::Nats::start();
    let bus = Bus::connect(&nats.url, None).await.unwrap();
    let js = nats.jetstream().await;
    let stream = js.get_stream(subjects::JOBS_STREAM).await.unwrap();
    // The attack: a consumer named for 10.0.0.5 that takes 10.0.0.6's jobs.
    let mut forged = subjects::job_consumer_spec("10.0.0.5");
    forged.filter_subject = subjects::job_subject("10.0.0.6");
    let _: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(consumer_config(&forged))
        .await
        .unwrap();

    bus.ensure_job_consumers(&["10.0.0.5".to_owned(), "10.0.0.6".to_owned()])
        .await
        .unwrap();
    for host in ["10.0.0.5", "10.0.0.6"] {
        let mut c: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&subjects::job_consumer(host))
            .await
            .unwrap();
        assert_eq!(
            c.info().await.unwrap().config.filter_subject,
            subjects::job_subject(host)
        );
    }
}
