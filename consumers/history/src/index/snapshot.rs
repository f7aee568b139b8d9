//! The in-memory index saved beside the SQLite file (`<file>.index`), so that
//! opening a large history reads one file instead of rebuilding the index
//! from the database (20M messages: a second or two instead of half a
//! minute).
//!
//! A snapshot holds the rows' timestamps, the per-topic, per-user and
//! per-package bitmaps and the `msg_id` table; the name tables are read from
//! the database on open (they are small), and rows stored after the snapshot
//! was taken are caught up from the database as those of another process
//! are. A snapshot is used only when its format is this version's, it is
//! whole (its length and end marker), and the database still holds its
//! newest row with the same `msg_id` hash; otherwise the index is rebuilt and
//! a new snapshot written. It is written to a temporary file and renamed, so
//! a crash leaves the old snapshot or the new one, never a torn one.
//!
//! Layout (little-endian): magic, format version, newest row id and its
//! `msg_id` hash, `usable`, the timestamps, the `msg_id` table (hashes, then
//! rows), the bitmap of every row, the three bitmap maps (count, then id,
//! length and roaring bytes each), and the magic again.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use super::{MemIndex, MsgIdTable};

const MAGIC: &[u8; 8] = b"FEDHUBIX";
const FORMAT: u32 = 1;

/// What ties a snapshot to its database: the newest row it holds, and that
/// row's `msg_id` hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMark {
    /// The newest row id indexed.
    pub max_row: i64,
    /// Its `msg_id` hash, as stored in the database.
    pub max_row_hash: u64,
}

/// The snapshot file of the database at `database`.
pub fn snapshot_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".index");
    PathBuf::from(name)
}

fn put_u64(out: &mut impl Write, v: u64) -> io::Result<()> {
    out.write_all(&v.to_le_bytes())
}

fn put_bitmap(out: &mut impl Write, bitmap: &RoaringBitmap) -> io::Result<()> {
    put_u64(out, bitmap.serialized_size() as u64)?;
    bitmap.serialize_into(out)
}

fn put_map(out: &mut impl Write, map: &HashMap<i64, RoaringBitmap>) -> io::Result<()> {
    put_u64(out, map.len() as u64)?;
    let mut ids: Vec<&i64> = map.keys().collect();
    ids.sort_unstable();
    for id in ids {
        put_u64(out, *id as u64)?;
        put_bitmap(out, &map[id])?;
    }
    Ok(())
}

/// Reads a snapshot file as a stream (the file is never held whole in
/// memory), failing with what is wrong.
struct Reader {
    input: io::BufReader<std::fs::File>,
    /// Bytes not read yet (the file's length, counted down).
    left: u64,
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Items converted per read.
const CHUNK_ITEMS: usize = 8192;

impl Reader {
    fn bytes(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        if (buf.len() as u64) > self.left {
            return Err(corrupt(&format!("truncated in {what}")));
        }
        self.input.read_exact(buf)?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self, what: &str) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.bytes(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A count of items of `item_bytes` each, checked against what is left.
    fn len(&mut self, what: &str, item_bytes: u64) -> io::Result<usize> {
        let n = self.u64(what)?;
        if n.saturating_mul(item_bytes) > self.left {
            return Err(corrupt(&format!("truncated in {what}")));
        }
        usize::try_from(n).map_err(|_| corrupt(what))
    }

    /// `n` fixed-size items, converted a chunk at a time.
    fn items<T, const N: usize>(
        &mut self,
        n: usize,
        what: &str,
        convert: fn([u8; N]) -> T,
    ) -> io::Result<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        let mut chunk = vec![0u8; CHUNK_ITEMS * N];
        while out.len() < n {
            let items = (n - out.len()).min(CHUNK_ITEMS);
            let buf = &mut chunk[..items * N];
            self.bytes(buf, what)?;
            out.extend(
                buf.chunks_exact(N)
                    .map(|b| convert(b.try_into().expect("N bytes"))),
            );
        }
        Ok(out)
    }

    fn bitmap(&mut self, what: &str) -> io::Result<RoaringBitmap> {
        let n = self.len(what, 1)? as u64;
        self.left -= n;
        RoaringBitmap::deserialize_from((&mut self.input).take(n))
    }

    fn map(&mut self, what: &str) -> io::Result<HashMap<i64, RoaringBitmap>> {
        let n = self.len(what, 16)?;
        let mut map = HashMap::with_capacity(n);
        for _ in 0..n {
            let id = self.u64(what)? as i64;
            map.insert(id, self.bitmap(what)?);
        }
        Ok(map)
    }
}

impl MemIndex {
    /// Writes the index (without its name tables) to `path`, tagged with
    /// `mark`: to a temporary file beside it, then renamed over it. Returns
    /// the bytes written.
    pub fn save_snapshot(&mut self, path: &Path, mark: SnapshotMark) -> io::Result<u64> {
        self.msg_ids.compact();
        let (hashes, rows) = self.msg_ids.base();
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let mut out = io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&partial)?);
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT.to_le_bytes())?;
        put_u64(&mut out, mark.max_row as u64)?;
        put_u64(&mut out, mark.max_row_hash)?;
        put_u64(&mut out, u64::from(self.usable))?;
        put_u64(&mut out, self.ts.len() as u64)?;
        for t in &self.ts {
            out.write_all(&t.to_le_bytes())?;
        }
        put_u64(&mut out, hashes.len() as u64)?;
        for h in hashes {
            out.write_all(&h.to_le_bytes())?;
        }
        for r in rows {
            out.write_all(&r.to_le_bytes())?;
        }
        put_bitmap(&mut out, &self.all)?;
        put_map(&mut out, &self.topic_rows)?;
        put_map(&mut out, &self.user_rows)?;
        put_map(&mut out, &self.package_rows)?;
        out.write_all(MAGIC)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        let bytes = file.metadata()?.len();
        drop(file);
        std::fs::rename(&partial, path)?;
        Ok(bytes)
    }

    /// Reads a snapshot written by [`save_snapshot`](Self::save_snapshot):
    /// the index (name tables empty, block bounds not yet computed: call
    /// [`finish_bulk`](Self::finish_bulk)) and its mark.
    pub fn load_snapshot(path: &Path) -> io::Result<(MemIndex, SnapshotMark)> {
        let file = std::fs::File::open(path)?;
        let left = file.metadata()?.len();
        let mut r = Reader {
            input: io::BufReader::with_capacity(1 << 16, file),
            left,
        };
        let mut magic = [0u8; 8];
        r.bytes(&mut magic, "header")?;
        if &magic != MAGIC {
            return Err(corrupt("not a fedhub index snapshot"));
        }
        let mut format = [0u8; 4];
        r.bytes(&mut format, "header")?;
        let format = u32::from_le_bytes(format);
        if format != FORMAT {
            return Err(corrupt(&format!(
                "snapshot format {format}, this fedhub reads {FORMAT}"
            )));
        }
        let mark = SnapshotMark {
            max_row: r.u64("header")? as i64,
            max_row_hash: r.u64("header")?,
        };
        let usable = r.u64("header")? != 0;
        let n = r.len("timestamps", 8)?;
        let ts: Vec<f64> = r.items(n, "timestamps", f64::from_le_bytes)?;
        let n = r.len("msg_id table", 12)?;
        let hashes: Vec<u64> = r.items(n, "msg_id table", u64::from_le_bytes)?;
        let rows: Vec<u32> = r.items(n, "msg_id table", u32::from_le_bytes)?;
        if !hashes.windows(2).all(|w| w[0] <= w[1]) {
            return Err(corrupt("msg_id table out of order"));
        }
        let all = r.bitmap("rows")?;
        let topic_rows = r.map("topics")?;
        let user_rows = r.map("users")?;
        let package_rows = r.map("packages")?;
        r.bytes(&mut magic, "end marker")?;
        if &magic != MAGIC || r.left != 0 {
            return Err(corrupt("no end marker where expected"));
        }
        let index = MemIndex {
            usable,
            ts,
            all,
            topic_rows,
            user_rows,
            package_rows,
            msg_ids: MsgIdTable::from_base(hashes, rows),
            max_row: mark.max_row,
            ..MemIndex::default()
        };
        Ok((index, mark))
    }
}
