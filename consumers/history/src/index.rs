//! The in-memory query index that makes filtered counts and first pages cheap
//! whatever the size of the archive.
//!
//! datagrepper answers every query with `total`, so a query over all of history
//! must count every match: with B-tree indexes alone that is linear in the number
//! of matches (the 2015 measurement: seconds for combined filters). Here every
//! topic, user and package has a compressed bitmap of the row ids carrying it
//! (roaring), and every row's timestamp sits in an array, so:
//!
//! - the rows matching the lists are bitmap algebra (OR within a list, AND across
//!   lists, AND-NOT for `not_*`), independent of how many rows match;
//! - a time window is counted block by block (1024 row ids per block): a block
//!   whose timestamps all fall inside the window adds its bitmap cardinality, one
//!   wholly outside is skipped, and only the few blocks straddling an edge look at
//!   single timestamps (rows arrive roughly in time order, so almost every block is
//!   wholly in or out);
//! - the page is chosen by walking candidate row ids from the newest storage
//!   position with a bounded heap, stopping as soon as the per-block running
//!   maximum (or minimum, for `asc`) timestamp proves no remaining row can enter
//!   the page, which is exact even when rows were stored out of time order
//!   (imports of old messages).
//!
//! It also holds the `msg_id` hash of every row, which is how duplicates are
//! found and `/id` is answered without a B-tree on a random key (see
//! [`crate::sqlite`] for why).
//!
//! It costs about 35 bytes per stored message (timestamps, bitmaps, the
//! `msg_id` hash table), is rebuilt from the database on open (covering indexes
//! only, about a second per million messages), is updated by the writer after
//! each commit, and catches up with rows committed by other processes (an
//! import running beside the hub) before they are used.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use roaring::RoaringBitmap;

mod snapshot;
pub use snapshot::{snapshot_path, SnapshotMark};

use crate::filter::{Filter, Order};

/// A `msg_id`'s 64-bit FNV-1a hash (stable across versions and platforms:
/// it is stored in the database).
pub fn msg_hash(msg_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in msg_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Adds `row` to `rows`: appended when it is above every row there (rows are
/// loaded and stored in about increasing order, and appending skips the
/// search `insert` does), else inserted.
fn add(rows: &mut RoaringBitmap, row: u32) {
    if !rows.push(row) {
        rows.insert(row);
    }
}

/// Row ids per block of timestamp bounds.
const BLOCK_SHIFT: u32 = 10;

/// Ids of the names a filter mentions, resolved against the index.
#[derive(Default)]
struct Lists<'a> {
    positive: Vec<Vec<&'a RoaringBitmap>>,
    negative: Vec<&'a RoaringBitmap>,
}

/// The rows a filter selects: built, or two bitmaps whose intersection is
/// counted and walked without being built (see [`MemIndex::select`]).
pub enum Selection<'a> {
    /// The rows.
    Rows(RoaringBitmap),
    /// The rows of one name (borrowed, not copied).
    One(&'a RoaringBitmap),
    /// The rows in both: the smaller bitmap first.
    Pair(&'a RoaringBitmap, &'a RoaringBitmap),
}

/// One row as the writer adds it.
pub struct IndexedRow<'a> {
    /// Row id.
    pub id: i64,
    /// Hash of the `msg_id` ([`msg_hash`]).
    pub hash: u64,
    /// Topic id.
    pub topic_id: i64,
    /// Unix seconds.
    pub timestamp: f64,
    /// User ids.
    pub users: &'a [i64],
    /// Package ids.
    pub packages: &'a [i64],
}

/// `msg_id` hashes to row ids, at 12 bytes a row: a base sorted by hash (two
/// parallel arrays, binary searched) and a hash map of the rows added since
/// the base was last rebuilt, merged into it once it holds a sixteenth as
/// many (so the writer pays an amortised constant per row, and a merge of
/// 20M rows takes a fraction of a second). During a bulk load rows are only
/// appended, and sorted once at its end.
#[derive(Default)]
pub(crate) struct MsgIdTable {
    hashes: Vec<u64>,
    rows: Vec<u32>,
    /// Rows since the last merge: (hash, row) pairs; a hash repeats only on
    /// a collision or a duplicate `msg_id` stored by another process.
    recent: HashMap<u64, Vec<u32>>,
    recent_rows: usize,
    /// Appended unsorted during a bulk load.
    bulk: Option<Vec<(u64, u32)>>,
}

/// Rows the recent map holds at least before a merge.
const MIN_MERGE_ROWS: usize = 1 << 16;

impl MsgIdTable {
    /// Rows whose `msg_id` has `hash`.
    pub fn rows(&self, hash: u64) -> Vec<u32> {
        let start = self.hashes.partition_point(|h| *h < hash);
        let end = start + self.hashes[start..].partition_point(|h| *h == hash);
        let mut rows: Vec<u32> = self.rows[start..end].to_vec();
        if let Some(more) = self.recent.get(&hash) {
            rows.extend(more);
        }
        if let Some(bulk) = &self.bulk {
            rows.extend(bulk.iter().filter(|(h, _)| *h == hash).map(|(_, r)| *r));
        }
        rows
    }

    /// Starts a bulk load of about `rows` rows.
    pub fn begin_bulk(&mut self, rows: usize) {
        self.bulk.get_or_insert_with(Vec::new).reserve(rows);
    }

    /// Adds a row (adding the same row again changes nothing once merged).
    pub fn insert(&mut self, hash: u64, row: u32) {
        if let Some(bulk) = &mut self.bulk {
            bulk.push((hash, row));
            return;
        }
        if self.base_contains(hash, row) {
            return;
        }
        let rows = self.recent.entry(hash).or_default();
        if rows.contains(&row) {
            return;
        }
        rows.push(row);
        self.recent_rows += 1;
        if self.recent_rows >= MIN_MERGE_ROWS.max(self.hashes.len() / 16) {
            self.compact();
        }
    }

    fn base_contains(&self, hash: u64, row: u32) -> bool {
        let start = self.hashes.partition_point(|h| *h < hash);
        self.hashes[start..]
            .iter()
            .zip(&self.rows[start..])
            .take_while(|(h, _)| **h == hash)
            .any(|(_, r)| *r == row)
    }

    /// Merges the recent rows (and a bulk load) into the sorted base.
    pub fn compact(&mut self) {
        let mut added: Vec<(u64, u32)> = self.bulk.take().unwrap_or_default();
        added.reserve(self.recent_rows);
        for (hash, rows) in self.recent.drain() {
            added.extend(rows.into_iter().map(|r| (hash, r)));
        }
        self.recent_rows = 0;
        self.recent.shrink_to_fit();
        if added.is_empty() {
            return;
        }
        added.sort_unstable();
        added.dedup();
        let total = self.hashes.len() + added.len();
        let mut hashes = Vec::with_capacity(total);
        let mut rows = Vec::with_capacity(total);
        let (mut i, mut j) = (0, 0);
        while i < self.hashes.len() || j < added.len() {
            let take_base = j == added.len()
                || (i < self.hashes.len() && (self.hashes[i], self.rows[i]) <= added[j]);
            let (h, r) = if take_base {
                i += 1;
                (self.hashes[i - 1], self.rows[i - 1])
            } else {
                j += 1;
                added[j - 1]
            };
            if hashes.last() != Some(&h) || rows.last() != Some(&r) {
                hashes.push(h);
                rows.push(r);
            }
        }
        self.hashes = hashes;
        self.rows = rows;
    }

    /// The sorted base (after [`compact`](Self::compact)): hashes and rows.
    pub fn base(&self) -> (&[u64], &[u32]) {
        (&self.hashes, &self.rows)
    }

    /// A table whose base is `hashes` and `rows` (sorted by hash, then row).
    pub fn from_base(hashes: Vec<u64>, rows: Vec<u32>) -> MsgIdTable {
        MsgIdTable {
            hashes,
            rows,
            ..MsgIdTable::default()
        }
    }
}

/// Name tables and per-name bitmaps.
#[derive(Default)]
pub struct MemIndex {
    /// False once a row id does not fit the bitmaps (more than 4 billion rows):
    /// queries then go to SQL.
    usable: bool,
    ts: Vec<f64>,
    block_min: Vec<f64>,
    block_max: Vec<f64>,
    prefix_max: Vec<f64>,
    suffix_min: Vec<f64>,
    all: RoaringBitmap,
    topic_rows: HashMap<i64, RoaringBitmap>,
    user_rows: HashMap<i64, RoaringBitmap>,
    package_rows: HashMap<i64, RoaringBitmap>,
    msg_ids: MsgIdTable,
    max_row: i64,
    max_topic: i64,
    max_user: i64,
    max_package: i64,
    topic_ids: HashMap<String, i64>,
    category_topics: HashMap<String, Vec<i64>>,
    /// Every row of a category (the union of its topics' bitmaps, kept
    /// current so a category filter is one bitmap, not a union per query).
    category_rows: HashMap<String, RoaringBitmap>,
    topic_category: HashMap<i64, String>,
    user_ids: HashMap<String, i64>,
    package_ids: HashMap<String, i64>,
}

/// A candidate for the page heap: ordered so that the heap's top is the worst
/// row kept (the first to evict).
#[derive(PartialEq)]
struct Ranked {
    ts: f64,
    id: u32,
    desc: bool,
}

impl Eq for Ranked {}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" means "ranks later in the result".
        let by_time = self.ts.total_cmp(&other.ts).then(self.id.cmp(&other.id));
        if self.desc {
            by_time.reverse()
        } else {
            by_time
        }
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl MemIndex {
    /// An empty, usable index.
    pub fn new() -> MemIndex {
        MemIndex {
            usable: true,
            ..MemIndex::default()
        }
    }

    /// Whether queries can use it.
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Number of rows indexed.
    pub fn len(&self) -> u64 {
        self.all.len()
    }

    /// Whether no row is indexed.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether row `id` is indexed.
    pub fn has_row(&self, id: i64) -> bool {
        u32::try_from(id).is_ok_and(|r| self.all.contains(r))
    }

    /// The highest row id indexed.
    pub fn max_row(&self) -> i64 {
        self.max_row
    }

    /// The highest topic, user and package ids known.
    pub fn max_name_ids(&self) -> (i64, i64, i64) {
        (self.max_topic, self.max_user, self.max_package)
    }

    /// Rows whose `msg_id` has this hash (almost always zero or one).
    pub fn rows_with_hash(&self, hash: u64) -> Vec<u32> {
        self.msg_ids.rows(hash)
    }

    /// Id of a known topic.
    pub fn topic_id(&self, name: &str) -> Option<i64> {
        self.topic_ids.get(name).copied()
    }

    /// Id of a known user.
    pub fn user_id(&self, name: &str) -> Option<i64> {
        self.user_ids.get(name).copied()
    }

    /// Id of a known package.
    pub fn package_id(&self, name: &str) -> Option<i64> {
        self.package_ids.get(name).copied()
    }

    /// Records a topic and its category.
    pub fn add_topic(&mut self, name: &str, category: &str, id: i64) {
        self.max_topic = self.max_topic.max(id);
        if self.topic_ids.insert(name.to_string(), id).is_none() {
            self.category_topics
                .entry(category.to_string())
                .or_default()
                .push(id);
            self.topic_category.insert(id, category.to_string());
            let rows = self.category_rows.entry(category.to_string()).or_default();
            if let Some(known) = self.topic_rows.get(&id) {
                *rows |= known;
            }
        }
    }

    /// Records a user name.
    pub fn add_user(&mut self, name: &str, id: i64) {
        self.max_user = self.max_user.max(id);
        self.user_ids.insert(name.to_string(), id);
    }

    /// Records a package name.
    pub fn add_package(&mut self, name: &str, id: i64) {
        self.max_package = self.max_package.max(id);
        self.package_ids.insert(name.to_string(), id);
    }

    fn row_id(&mut self, id: i64) -> Option<u32> {
        match u32::try_from(id) {
            Ok(v) if v < u32::MAX => Some(v),
            _ => {
                if self.usable {
                    tracing::warn!(
                        id,
                        "row id exceeds the in-memory index; queries fall back to sql"
                    );
                }
                self.usable = false;
                None
            }
        }
    }

    /// Makes room for rows up to `max_row` before a bulk load (the `msg_id`
    /// table and the timestamps then grow once, not by doubling).
    pub fn reserve(&mut self, max_row: usize) {
        self.msg_ids.begin_bulk(max_row);
        self.ts.reserve((max_row + 1).saturating_sub(self.ts.len()));
    }

    /// Adds a row's hash, time and topic (bounds are refreshed by
    /// [`Self::finish_bulk`] or incrementally by [`Self::add_row`]). Adding the
    /// same row again changes nothing.
    pub fn add_time_topic(&mut self, id: i64, hash: u64, topic_id: i64, timestamp: f64) {
        self.max_row = self.max_row.max(id);
        let Some(row) = self.row_id(id) else { return };
        self.msg_ids.insert(hash, row);
        let at = row as usize;
        if self.ts.len() <= at {
            self.ts.resize(at + 1, f64::NAN);
        }
        self.ts[at] = timestamp;
        add(&mut self.all, row);
        add(self.topic_rows.entry(topic_id).or_default(), row);
        if let Some(category) = self.topic_category.get(&topic_id) {
            if let Some(rows) = self.category_rows.get_mut(category) {
                add(rows, row);
            }
        }
    }

    /// Adds a user link.
    pub fn add_user_link(&mut self, user_id: i64, id: i64) {
        if let Some(row) = self.row_id(id) {
            add(self.user_rows.entry(user_id).or_default(), row);
        }
    }

    /// Adds a package link.
    pub fn add_package_link(&mut self, package_id: i64, id: i64) {
        if let Some(row) = self.row_id(id) {
            add(self.package_rows.entry(package_id).or_default(), row);
        }
    }

    /// Sets the per-user and per-package bitmaps of a bulk load (links to
    /// rows not indexed are dropped).
    pub fn set_links(
        &mut self,
        mut users: HashMap<i64, RoaringBitmap>,
        mut packages: HashMap<i64, RoaringBitmap>,
    ) {
        for bitmap in users.values_mut().chain(packages.values_mut()) {
            *bitmap &= &self.all;
        }
        users.retain(|_, b| !b.is_empty());
        packages.retain(|_, b| !b.is_empty());
        self.user_rows = users;
        self.package_rows = packages;
    }

    /// Recomputes every block bound after a bulk load.
    pub fn finish_bulk(&mut self) {
        self.msg_ids.compact();
        let blocks = self.ts.len().div_ceil(1 << BLOCK_SHIFT);
        self.block_min = vec![f64::INFINITY; blocks];
        self.block_max = vec![f64::NEG_INFINITY; blocks];
        for (i, t) in self.ts.iter().enumerate() {
            if t.is_nan() {
                continue;
            }
            let b = i >> BLOCK_SHIFT;
            self.block_min[b] = self.block_min[b].min(*t);
            self.block_max[b] = self.block_max[b].max(*t);
        }
        self.prefix_max = Vec::with_capacity(blocks);
        let mut running = f64::NEG_INFINITY;
        for b in 0..blocks {
            running = running.max(self.block_max[b]);
            self.prefix_max.push(running);
        }
        self.suffix_min = vec![f64::INFINITY; blocks];
        let mut running = f64::INFINITY;
        for b in (0..blocks).rev() {
            running = running.min(self.block_min[b]);
            self.suffix_min[b] = running;
        }
    }

    /// Adds one newly committed row, keeping block bounds current.
    pub fn add_row(&mut self, row: &IndexedRow<'_>) {
        self.add_time_topic(row.id, row.hash, row.topic_id, row.timestamp);
        for u in row.users {
            self.add_user_link(*u, row.id);
        }
        for p in row.packages {
            self.add_package_link(*p, row.id);
        }
        let Ok(at) = usize::try_from(row.id) else {
            return;
        };
        let ts = row.timestamp;
        let b = at >> BLOCK_SHIFT;
        while self.block_min.len() <= b {
            let prev = self.prefix_max.last().copied().unwrap_or(f64::NEG_INFINITY);
            self.block_min.push(f64::INFINITY);
            self.block_max.push(f64::NEG_INFINITY);
            self.prefix_max.push(prev);
            self.suffix_min.push(f64::INFINITY);
        }
        self.block_min[b] = self.block_min[b].min(ts);
        self.block_max[b] = self.block_max[b].max(ts);
        for j in b..self.prefix_max.len() {
            if self.prefix_max[j] >= ts {
                break;
            }
            self.prefix_max[j] = ts;
        }
        for j in (0..=b).rev() {
            if self.suffix_min[j] <= ts {
                break;
            }
            self.suffix_min[j] = ts;
        }
    }

    fn lists<'a>(&'a self, filter: &Filter) -> Lists<'a> {
        fn pick<'a>(
            names: &[String],
            ids: &HashMap<String, i64>,
            rows: &'a HashMap<i64, RoaringBitmap>,
        ) -> Vec<&'a RoaringBitmap> {
            names
                .iter()
                .filter_map(|n| ids.get(n))
                .filter_map(|id| rows.get(id))
                .collect()
        }
        let categories = |names: &[String]| -> Vec<&'a RoaringBitmap> {
            names
                .iter()
                .filter_map(|c| self.category_rows.get(c))
                .collect()
        };
        let mut lists = Lists::default();
        for (names, sets) in [
            (
                &filter.users,
                pick(&filter.users, &self.user_ids, &self.user_rows),
            ),
            (
                &filter.packages,
                pick(&filter.packages, &self.package_ids, &self.package_rows),
            ),
            (&filter.categories, categories(&filter.categories)),
            (
                &filter.topics,
                pick(&filter.topics, &self.topic_ids, &self.topic_rows),
            ),
        ] {
            if !names.is_empty() {
                lists.positive.push(sets);
            }
        }
        lists
            .negative
            .extend(pick(&filter.not_users, &self.user_ids, &self.user_rows));
        lists.negative.extend(pick(
            &filter.not_packages,
            &self.package_ids,
            &self.package_rows,
        ));
        lists.negative.extend(categories(&filter.not_categories));
        lists
            .negative
            .extend(pick(&filter.not_topics, &self.topic_ids, &self.topic_rows));
        lists
    }

    /// The rows matching the filter's lists (times aside); `contains` is not
    /// handled here.
    pub fn candidates(&self, filter: &Filter) -> RoaringBitmap {
        let lists = self.lists(filter);
        let mut unions: Vec<RoaringBitmap> = lists
            .positive
            .iter()
            .map(|sets| match sets.as_slice() {
                [] => RoaringBitmap::new(),
                [one] => (*one).clone(),
                many => many.iter().fold(RoaringBitmap::new(), |acc, s| acc | *s),
            })
            .collect();
        unions.sort_by_key(|b| b.len());
        let mut rows = match unions.first() {
            Some(_) => {
                let mut iter = unions.into_iter();
                let mut acc = iter.next().unwrap_or_default();
                for other in iter {
                    if acc.is_empty() {
                        break;
                    }
                    acc &= other;
                }
                acc
            }
            None => self.all.clone(),
        };
        for exclude in lists.negative {
            if rows.is_empty() {
                break;
            }
            rows -= exclude;
        }
        rows
    }

    /// The rows a filter's lists select. One name alone is used in place, and
    /// the common case of exactly two names ANDed (a user and a category, say)
    /// with no exclusions and no time window is left as the pair: counting it is
    /// a popcount of the two bitmaps and paging walks the smaller one, so the
    /// intersection is never built.
    pub fn select(&self, filter: &Filter, window: Option<(f64, f64)>) -> Selection<'_> {
        let lists = self.lists(filter);
        let singles = lists.positive.iter().all(|sets| sets.len() == 1);
        if lists.negative.is_empty() && singles {
            match lists.positive.as_slice() {
                [] => return Selection::One(&self.all),
                [one] => return Selection::One(one[0]),
                [a, b] if window.is_none() => {
                    let (a, b) = (a[0], b[0]);
                    return if a.len() <= b.len() {
                        Selection::Pair(a, b)
                    } else {
                        Selection::Pair(b, a)
                    };
                }
                _ => {}
            }
        }
        Selection::Rows(self.candidates(filter))
    }

    /// How many rows of a selection fall in the window.
    pub fn count_selected(&self, selection: &Selection<'_>, window: Option<(f64, f64)>) -> u64 {
        match selection {
            Selection::Rows(rows) => self.count(rows, window),
            Selection::One(rows) => self.count(rows, window),
            Selection::Pair(small, large) if window.is_none() => small.intersection_len(large),
            Selection::Pair(small, large) => self.count(&(*small & *large), window),
        }
    }

    /// One page of a selection (see [`Self::page`]).
    pub fn page_selected(
        &self,
        selection: &Selection<'_>,
        window: Option<(f64, f64)>,
        order: Order,
        offset: u64,
        limit: u64,
        total: u64,
    ) -> Vec<u32> {
        match selection {
            Selection::Rows(rows) => self.page_of(rows, None, window, order, offset, limit, total),
            Selection::One(rows) => self.page_of(rows, None, window, order, offset, limit, total),
            Selection::Pair(small, large) => {
                self.page_of(small, Some(large), window, order, offset, limit, total)
            }
        }
    }

    /// (min, max) timestamp of a block; (inf, -inf) when it holds no row.
    fn block_bounds(&self, b: usize) -> (f64, f64) {
        (
            self.block_min.get(b).copied().unwrap_or(f64::INFINITY),
            self.block_max.get(b).copied().unwrap_or(f64::NEG_INFINITY),
        )
    }

    fn in_window(&self, row: u32, window: Option<(f64, f64)>) -> bool {
        let t = self.ts.get(row as usize).copied().unwrap_or(f64::NAN);
        match window {
            None => !t.is_nan(),
            Some((s, e)) => t >= s && t <= e,
        }
    }

    /// How many of `rows` fall in the window.
    pub fn count(&self, rows: &RoaringBitmap, window: Option<(f64, f64)>) -> u64 {
        let Some((s, e)) = window else {
            return rows.len();
        };
        let (Some(first), Some(last)) = (rows.min(), rows.max()) else {
            return 0;
        };
        let mut total = 0;
        for b in (first >> BLOCK_SHIFT)..=(last >> BLOCK_SHIFT) {
            let (lo, hi) = self.block_bounds(b as usize);
            if lo > e || hi < s || lo > hi {
                continue;
            }
            let begin = b << BLOCK_SHIFT;
            let end = begin.saturating_add((1 << BLOCK_SHIFT) - 1);
            if lo >= s && hi <= e {
                total += rows.range_cardinality(begin..=end);
            } else {
                let mut iter = rows.iter();
                iter.advance_to(begin);
                for row in iter {
                    if row > end {
                        break;
                    }
                    if self.in_window(row, window) {
                        total += 1;
                    }
                }
            }
        }
        total
    }

    /// The row ids of one page: rows of `rows` in the window, ordered by
    /// (timestamp, id) in `order`, skipping `offset` and keeping `limit`.
    /// `total` is the number of such rows (from [`Self::count`]).
    pub fn page(
        &self,
        rows: &RoaringBitmap,
        window: Option<(f64, f64)>,
        order: Order,
        offset: u64,
        limit: u64,
        total: u64,
    ) -> Vec<u32> {
        self.page_of(rows, None, window, order, offset, limit, total)
    }

    /// [`Self::page`] over the rows of `rows` that are also in `also` (when given).
    #[allow(clippy::too_many_arguments)]
    fn page_of(
        &self,
        rows: &RoaringBitmap,
        also: Option<&RoaringBitmap>,
        window: Option<(f64, f64)>,
        order: Order,
        offset: u64,
        limit: u64,
        total: u64,
    ) -> Vec<u32> {
        if offset >= total || limit == 0 {
            return vec![];
        }
        let take = limit.min(total - offset);
        // From the far end a deep page needs a smaller heap: select the rows
        // before it in the opposite order, then reverse.
        let from_end = total - offset - take;
        if from_end < offset {
            let reverse = match order {
                Order::Asc => Order::Desc,
                Order::Desc => Order::Asc,
            };
            let mut ids = self.top(rows, also, window, reverse, from_end + take);
            ids.drain(..(from_end as usize).min(ids.len()));
            ids.reverse();
            return ids;
        }
        let mut ids = self.top(rows, also, window, order, offset + take);
        ids.drain(..(offset as usize).min(ids.len()));
        ids
    }

    /// The first `k` rows in `order` (of those in `also` too, when given).
    fn top(
        &self,
        rows: &RoaringBitmap,
        also: Option<&RoaringBitmap>,
        window: Option<(f64, f64)>,
        order: Order,
        k: u64,
    ) -> Vec<u32> {
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        let desc = order == Order::Desc;
        let (s, e) = window.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k.min(1 << 16) + 1);
        let mut consider = |row: u32| -> bool {
            // Returns false when the walk can stop.
            let b = (row >> BLOCK_SHIFT) as usize;
            let bound = if desc {
                self.prefix_max.get(b).copied().unwrap_or(f64::NEG_INFINITY)
            } else {
                self.suffix_min.get(b).copied().unwrap_or(f64::INFINITY)
            };
            if desc && bound < s || !desc && bound > e {
                return false;
            }
            if heap.len() >= k {
                let worst = heap.peek().map(|w| w.ts).unwrap_or(f64::NAN);
                if desc && bound <= worst || !desc && bound >= worst {
                    return false;
                }
            }
            let t = self.ts.get(row as usize).copied().unwrap_or(f64::NAN);
            if t >= s && t <= e {
                heap.push(Ranked {
                    ts: t,
                    id: row,
                    desc,
                });
                if heap.len() > k {
                    heap.pop();
                }
            }
            true
        };
        let wanted = |row: &u32| also.is_none_or(|other| other.contains(*row));
        if desc {
            for row in rows.iter().rev().filter(wanted) {
                if !consider(row) {
                    break;
                }
            }
        } else {
            for row in rows.iter().filter(wanted) {
                if !consider(row) {
                    break;
                }
            }
        }
        heap.into_sorted_vec().into_iter().map(|r| r.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(rows: &[(i64, i64, f64)]) -> MemIndex {
        let mut idx = MemIndex::new();
        idx.add_topic("a", "x", 1);
        idx.add_topic("b", "y", 2);
        for (id, topic, ts) in rows {
            idx.add_row(&IndexedRow {
                id: *id,
                hash: *id as u64,
                topic_id: *topic,
                timestamp: *ts,
                users: &[],
                packages: &[],
            });
        }
        idx
    }

    #[test]
    fn msg_hash_is_fnv1a() {
        assert_eq!(msg_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(msg_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let mut idx = MemIndex::new();
        idx.add_time_topic(1, 7, 1, 1.0);
        idx.add_time_topic(2, 7, 1, 2.0);
        idx.add_time_topic(2, 7, 1, 2.0);
        assert_eq!(idx.rows_with_hash(7), vec![1, 2]);
        assert_eq!(idx.rows_with_hash(8), Vec::<u32>::new());
        assert_eq!((idx.len(), idx.max_row()), (2, 2));
    }

    /// The page and count agree with sorting everything, including rows stored
    /// out of time order and across blocks.
    #[test]
    fn pages_and_counts_match_a_full_sort() {
        let mut rows = Vec::new();
        let mut state = 7u64;
        for id in 1..5000i64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let jitter = ((state >> 33) % 50) as f64;
            // Mostly increasing, with a block of "imported" old rows in the middle.
            let ts = if (2000..2600).contains(&id) {
                100.0 + jitter
            } else {
                id as f64 + jitter
            };
            rows.push((id, 1 + (id % 2), ts));
        }
        let idx = index(&rows);
        let mut bulk = MemIndex::new();
        bulk.add_topic("a", "x", 1);
        bulk.add_topic("b", "y", 2);
        for (id, t, ts) in &rows {
            bulk.add_time_topic(*id, *id as u64, *t, *ts);
        }
        bulk.finish_bulk();
        for idx in [&idx, &bulk] {
            let f = Filter::new().category("x");
            let cand = idx.candidates(&f);
            for window in [None, Some((120.0, 3000.0)), Some((4990.0, 6000.0))] {
                let mut want: Vec<(f64, u32)> = rows
                    .iter()
                    .filter(|(_, t, ts)| {
                        *t == 1 && window.is_none_or(|(s, e)| *ts >= s && *ts <= e)
                    })
                    .map(|(id, _, ts)| (*ts, *id as u32))
                    .collect();
                want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let total = idx.count(&cand, window);
                assert_eq!(total, want.len() as u64);
                for order in [Order::Asc, Order::Desc] {
                    let mut sorted = want.clone();
                    if order == Order::Desc {
                        sorted.reverse();
                    }
                    for (offset, limit) in [(0, 25), (30, 10), (total.saturating_sub(5), 25)] {
                        let got = idx.page(&cand, window, order, offset, limit, total);
                        let expect: Vec<u32> = sorted
                            .iter()
                            .skip(offset as usize)
                            .take(limit as usize)
                            .map(|p| p.1)
                            .collect();
                        assert_eq!(got, expect, "{window:?} {order:?} {offset}");
                    }
                }
            }
        }
    }

    /// Two names ANDed are counted and paged without building the
    /// intersection, with the same results as the built set.
    #[test]
    fn pairs_count_and_page_like_built_sets() {
        let mut idx = MemIndex::new();
        idx.add_topic("a", "x", 1);
        idx.add_user("u", 1);
        let mut state = 11u64;
        let mut expected = Vec::new();
        for id in 1..20_000i64 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let topic = 1 + (state >> 40) as i64 % 3;
            let users: &[i64] = if id % 3 == 0 { &[1] } else { &[] };
            let ts = id as f64 + ((state >> 20) % 40) as f64;
            idx.add_row(&IndexedRow {
                id,
                hash: id as u64,
                topic_id: topic,
                timestamp: ts,
                users,
                packages: &[],
            });
            if topic == 1 && id % 3 == 0 {
                expected.push((ts, id as u32));
            }
        }
        // A topic named after its rows arrived still joins its category.
        idx.add_topic("b", "x", 2);
        let f = Filter::new().category("x").user("u");
        let selection = idx.select(&f, None);
        assert!(matches!(selection, Selection::Pair(..)));
        let built = idx.candidates(&f);
        let total = idx.count_selected(&selection, None);
        assert_eq!(total, idx.count(&built, None));
        let only_a = idx.select(&Filter::new().topic("a").user("u"), None);
        assert_eq!(idx.count_selected(&only_a, None), expected.len() as u64);
        for order in [Order::Asc, Order::Desc] {
            for (offset, limit) in [(0, 25), (100, 100), (total - 10, 25)] {
                assert_eq!(
                    idx.page_selected(&selection, None, order, offset, limit, total),
                    idx.page(&built, None, order, offset, limit, total),
                    "{order:?} {offset}"
                );
            }
        }
        expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = expected.len() as u64;
        let newest: Vec<u32> = expected.iter().rev().take(25).map(|p| p.1).collect();
        assert_eq!(
            idx.page_selected(&only_a, None, Order::Desc, 0, 25, n),
            newest
        );
        let single = idx.select(&Filter::new().user("u"), Some((0.0, 9000.0)));
        assert!(matches!(single, Selection::One(_)));
        assert_eq!(
            idx.count_selected(&single, Some((0.0, 9000.0))),
            idx.count(
                &idx.candidates(&Filter::new().user("u")),
                Some((0.0, 9000.0))
            )
        );
        // With a window the rows are built; the answer is the same.
        let window = Some((5000.0, 6000.0));
        let windowed = idx.select(&f, window);
        assert!(matches!(windowed, Selection::Rows(_)));
        assert_eq!(
            idx.count_selected(&windowed, window),
            idx.count(&built, window)
        );
    }
}
