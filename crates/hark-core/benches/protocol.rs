//! The core's append → preview → push cycle, in process, no IO (SPEC.md section 10: at least
//! 1,000,000 actions/s on one core).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hark_core::protocol::{
    Action, Confirm, Conversation, Limits, ParticipantKind, ParticipantName, RequestId,
};
use hark_core::time::Millis;

fn cycle(c: &mut Criterion) {
    let alice = ParticipantName::parse("alice").unwrap();
    let bob = ParticipantName::parse("bob").unwrap();
    let mut group = c.benchmark_group("protocol");
    // One iteration is three actions: append, preview, push.
    group.throughput(Throughput::Elements(3));
    group.bench_function("append_preview_push", |b| {
        let mut conversation = Conversation::new("bench", Limits::default());
        conversation.add_participant(alice.clone(), ParticipantKind::Agent);
        conversation.add_participant(bob.clone(), ParticipantKind::Agent);
        let mut request = 0;
        let mut now = 0;
        b.iter(|| {
            for action in [
                Action::Append {
                    text: "A sentence of a typical length, as a model streams it. ".into(),
                },
                Action::Preview,
                Action::Push {
                    force: false,
                    client_id: None,
                },
            ] {
                request += 1;
                now += 1;
                conversation.handle_request(
                    Millis(now),
                    RequestId(request),
                    &alice,
                    action,
                    Confirm::Transport,
                );
                while let Some(output) = conversation.poll_output() {
                    black_box(output);
                }
            }
        });
    });
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
