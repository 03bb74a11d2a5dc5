// Experiment: memory of a full scan of a log written in groups of G events.
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let group: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    if !dir.exists() {
        let log = ims_log::EventLog::open(&dir, "bench-1").unwrap();
        let envelopes = ims_projection::synthetic::mixed_log(1_000_000, 1000);
        for chunk in envelopes.chunks(group) {
            ims_projection::synthetic::append_to(&log, chunk).unwrap();
        }
        drop(log);
        std::thread::sleep(std::time::Duration::from_secs(1));
        println!("written");
        return;
    }
    let log = ims_log::EventLog::open(&dir, "bench-1").unwrap();
    println!("open {}", rss());
    let t = std::time::Instant::now();
    let checked = log.verify(1..=log.head_position()).unwrap();
    println!("verify {checked:?} {:?} {}", t.elapsed(), rss());
}
