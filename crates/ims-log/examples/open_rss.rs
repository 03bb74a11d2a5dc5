fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect::<Vec<_>>()
        .join(" ")
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mode = std::env::args().nth(2).unwrap_or_default();
    println!("start {}", rss());
    let t = std::time::Instant::now();
    if mode == "sled" {
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(
                std::env::var("CACHE")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(64 << 20),
            )
            .open()
            .unwrap();
        println!("sled open {:?} {}", t.elapsed(), rss());
        drop(db);
    } else {
        let log = ims_log::EventLog::open(&path, "test-1").unwrap();
        println!("log open {:?} {}", t.elapsed(), rss());
        let _ = log.read_range(1, 1).unwrap();
        println!("read {:?} {}", t.elapsed(), rss());
    }
}
