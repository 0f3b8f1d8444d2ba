//! The Trading API simulator's sweep form (003's
//! application/x-www-form-urlencoded body).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hookmesh_trading_api_sim::read_sweep_form(data);
});
