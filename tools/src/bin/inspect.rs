//! `ferry-inspect`: what a relay can see of Ferry frames, field by field.
//!
//! ```text
//! ferry-inspect HEX...        frames given as hex on the command line
//! ferry-inspect --file PATH   a file: hex frames one per line, or one raw frame
//! ferry-inspect --pcap PATH   every UDP payload of a pcap or pcapng capture (tcpdump -w)
//! ferry-inspect -             hex frames, one per line, on stdin
//! ```
//! Exit status: 0 when every input could be read (frames that are not
//! Ferry's are reported, not errors), 1 when an input could not be read or
//! was not hex, 2 for a usage error.

use std::io::Read;
use std::process::ExitCode;

use ferry_tools::inspect::{self, Tally};

const USAGE: &str = "usage: ferry-inspect HEX... | --file PATH | --pcap PATH | -
  HEX          a frame as hex (spaces, ':' and '-' allowed)
  --file PATH  hex frames one per line ('#' comments), or one raw binary frame
  --pcap PATH  the UDP payloads of a pcap or pcapng capture (mDNS is counted, not shown)
  -            hex frames, one per line, on stdin";

/// Largest input read (a capture of a busy LAN for a while).
const MAX_INPUT: u64 = 512 << 20;

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut data = Vec::new();
    f.take(MAX_INPUT + 1).read_to_end(&mut data).map_err(|e| format!("{path}: {e}"))?;
    if data.len() as u64 > MAX_INPUT {
        return Err(format!("{path}: larger than {} MiB", MAX_INPUT >> 20));
    }
    Ok(data)
}

fn run(args: &[String]) -> Result<(String, Tally), (u8, String)> {
    match args {
        [] => Err((2, USAGE.to_owned())),
        [flag] if flag == "-h" || flag == "--help" => Ok((format!("{USAGE}\n"), Tally::default())),
        [flag, path] if flag == "--pcap" => {
            let data = read_file(path).map_err(|e| (1, e))?;
            inspect::capture(&data).map_err(|e| (1, format!("{path}: {e}")))
        }
        [flag, path] if flag == "--file" => {
            let data = read_file(path).map_err(|e| (1, e))?;
            if inspect::looks_like_hex(&data) {
                Ok(inspect::hex_lines(&String::from_utf8_lossy(&data)))
            } else {
                Ok(inspect::raw(&data))
            }
        }
        [dash] if dash == "-" => {
            let mut text = String::new();
            std::io::stdin().take(MAX_INPUT).read_to_string(&mut text).map_err(|e| (1, format!("stdin: {e}")))?;
            Ok(inspect::hex_lines(&text))
        }
        hexes if hexes.iter().all(|a| !a.starts_with("--")) => Ok(inspect::hex_lines(&hexes.join("\n"))),
        _ => Err((2, USAGE.to_owned())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok((out, tally)) => {
            print!("{out}");
            if !args.iter().any(|a| a == "-h" || a == "--help") {
                println!("{}", tally.line());
            }
            if tally.bad_input > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err((code, msg)) => {
            eprintln!("ferry-inspect: {msg}");
            ExitCode::from(code)
        }
    }
}
