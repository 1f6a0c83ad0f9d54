//! The endpoint decision, per message (issue 16: under 50 µs): the learned completeness model's
//! score, the decision itself, and a whole person message through the engine with both.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hark_core::time::Millis;
use hark_core::turn::{
    Completeness, CompletenessModel, Evidence, Input, PersonMessage, PersonRhythm, TurnConfig,
    TurnEngine, decide,
};

/// Chat bubbles of typical lengths.
const BUBBLES: [&str; 4] = [
    "hey",
    "so i was thinking we could go hiking on sunday",
    "what do you think?",
    "i mean if the weather holds, and if you are not too tired after the week you had, we could \
     leave early and be back by lunch",
];

fn decision(c: &mut Criterion) {
    let model = CompletenessModel::builtin();
    let mut group = c.benchmark_group("decision");
    group.bench_function("completeness_model_logit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % BUBBLES.len();
            black_box(model.logit(black_box(BUBBLES[i]), None, (i % 3) as u32))
        })
    });

    let mut rhythm = PersonRhythm::default();
    rhythm.observe_typing_start();
    for gap in [0, 3000, 200, 2500, 0, 4000] {
        rhythm.observe_gap(gap);
    }
    for _ in 0..3 {
        rhythm.observe_reply_latency(12_000);
    }
    let config = TurnConfig::default();
    group.bench_function("decide", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            let evidence = Evidence {
                class: Completeness::Neutral,
                question: false,
                index: i % 3,
                model_logit: Some(f64::from(i % 7) * 0.1 - 0.3),
                typing: true,
                cap_left_ms: 10_000,
            };
            black_box(decide(black_box(&evidence), &rhythm, &config))
        })
    });

    group.bench_function("person_message_through_the_engine", |b| {
        // Prompts off: the history's string copies are not the decision's cost.
        let config = TurnConfig {
            build_prompt: false,
            ..TurnConfig::default()
        };
        let mut engine = TurnEngine::new(config);
        engine.set_rhythm(rhythm);
        let mut seq = 0;
        let mut now = 0;
        b.iter(|| {
            seq += 1;
            now += 50;
            engine.handle_input(
                Millis(now),
                Input::PersonMessage(PersonMessage {
                    seq,
                    text: BUBBLES[(seq % 4) as usize].to_owned(),
                    attachment: None,
                }),
            );
            while let Some(out) = engine.poll_output() {
                black_box(out);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
