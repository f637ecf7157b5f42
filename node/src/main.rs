//! `ferry`: for now, `ferry demo` runs a small mesh in one process with the
//! real `proto` core and narrates what happens. The LAN daemon, the command
//! line and the chat come with the node (issue 3).

mod demo;

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("demo") => demo::run(),
        Some("-h" | "--help" | "help") => usage(),
        Some(other) => {
            eprintln!("ferry: unknown command `{other}`");
            usage();
            std::process::exit(2);
        }
    }
}

fn usage() {
    println!("usage: ferry [demo]");
    println!();
    println!("  demo   run an in-process mesh (Alice, three relays, Bob) and narrate it");
}
