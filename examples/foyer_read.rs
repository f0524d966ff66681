//! foyer's own read rate, without FUSE or the rest of the daemon: 64 blobs of 4 MiB are put
//! into a foyer tier (RAM 512 MiB, disk 1 GiB under DIR, on direct I/O where DIR's filesystem
//! has it), the tier is closed and reopened with 4 MiB of RAM so every read comes from its
//! disk, and each blob is read back whole through `FoyerTier::read_into` (pieces fetched
//! concurrently, each verified) into a file, one blob after another, three rounds.
//! Usage: cargo run --release --example foyer_read -- DIR   (DIR: a scratch directory)
use std::time::Instant;
use wombatfs::blob::BlobId;
use wombatfs::tiers::foyer::FoyerTier;
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: foyer_read DIR"));
    let count: usize = 64;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut ids = vec![];
    {
        let _g = rt.enter();
        let f = rt.block_on(FoyerTier::open(&dir.join("foyer"), 512 << 20, 1 << 30)).unwrap();
        for i in 0..count {
            let data: Vec<u8> = (0..(4u64 << 20)).map(|j| ((j * 2654435761 + i as u64 * 7919) >> 7) as u8).collect();
            let id = BlobId::of(&data);
            let p = dir.join("src");
            std::fs::write(&p, &data).unwrap();
            f.insert_file(&id, &std::fs::File::open(&p).unwrap(), data.len() as u64).unwrap();
            ids.push(id);
        }
        rt.block_on(f.close());
    }
    for round in 0..3 {
        let _g = rt.enter();
        let f = rt.block_on(FoyerTier::open(&dir.join("foyer"), 4 << 20, 1 << 30)).unwrap();
        let t = Instant::now();
        let mut lat = vec![];
        for id in &ids {
            let p = dir.join("dst");
            let _ = std::fs::remove_file(&p);
            let file = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&p).unwrap();
            let t0 = Instant::now();
            let got = rt.block_on(f.read_into(id, &file, None)).unwrap();
            assert!(got.is_some());
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let el = t.elapsed().as_secs_f64();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("round {round}: {:.0} MiB/s, per blob p50 {:.2} ms p90 {:.2} ms", (count * 4) as f64 / el, lat[lat.len() / 2], lat[lat.len() * 9 / 10]);
        rt.block_on(f.close());
    }
}
