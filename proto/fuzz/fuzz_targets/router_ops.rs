#![no_main]

use ferry_fuzz::router_ops::{Input, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input| {
    run(input);
});
