//! The gitlab CI normaliser: a webhook to seed 001's pipeline event.
#![no_main]

use hookmesh_contracts::ci::CiPlatform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hookmesh_fuzz::normalise(CiPlatform::Gitlab, data));
