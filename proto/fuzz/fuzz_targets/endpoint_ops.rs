#![no_main]

use ferry_fuzz::endpoint_ops::{Input, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input| {
    run(input);
});
