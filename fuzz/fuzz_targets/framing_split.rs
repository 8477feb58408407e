//! The request framing checks judge a connection's bytes the same way however the client's
//! writes were split: the bytes passed to hyper and the refusal (and where it falls) must match
//! those of the whole input judged at once. Upgrade requests get the same verdicts in both runs.

#![no_main]

use farmgate::framing::{Framing, Step};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// Where the client's writes end (taken modulo the length, sorted).
    cuts: Vec<u16>,
    /// The proxy's answers to upgrade requests, in order: switched or not.
    verdicts: Vec<bool>,
}

/// What one run ended with: bytes passed, and a refusal (head or body) if there was one.
#[derive(Debug, PartialEq)]
struct Outcome {
    passed: usize,
    refused: Option<bool>,
}

fn drive(data: &[u8], cuts: &[usize], verdicts: &[bool]) -> Outcome {
    let mut framing = Framing::new(1024);
    let mut passed = 0;
    let mut answers = verdicts.iter().copied();
    for &available in cuts.iter().chain(std::iter::once(&data.len())) {
        loop {
            match framing.judge(&data[passed..available]) {
                Step::More(n) => {
                    passed += n;
                    break;
                }
                Step::Await(n, _) => {
                    passed += n;
                    framing.verdict(answers.next().unwrap_or(false));
                }
                Step::RefuseHead(n, _) => {
                    return Outcome {
                        passed: passed + n,
                        refused: Some(true),
                    };
                }
                Step::RefuseBody(n, _) => {
                    return Outcome {
                        passed: passed + n,
                        refused: Some(false),
                    };
                }
            }
        }
    }
    Outcome {
        passed,
        refused: None,
    }
}

fuzz_target!(|input: Input| {
    let len = input.data.len();
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| if len == 0 { 0 } else { c as usize % len })
        .collect();
    cuts.sort_unstable();
    let whole = drive(&input.data, &[], &input.verdicts);
    let split = drive(&input.data, &cuts, &input.verdicts);
    assert_eq!(whole, split, "cuts {cuts:?}");
    assert!(whole.passed <= len);
});
