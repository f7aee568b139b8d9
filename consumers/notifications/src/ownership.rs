//! What "my packages" means: package ownership and group membership from a
//! source the site configures (a file, or HTTP services shaped like
//! dist-git's Pagure API and FASJSON), kept in memory and invalidated per
//! user, package or group by the bus messages that announce a change
//! (`.pkgdb.`, `.fas.group.`, Pagure access topics), as FMN's caches were.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::Deserialize;
use serde_json::Value;

/// An access level on a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acl {
    /// Owner or admin.
    Owner = 1,
    /// Commit (Pagure `commit`, `collaborator`).
    Commit = 2,
    /// Watching (Pagure `ticket`, pkgdb `watchcommits`/`watchbugzilla`).
    Watch = 4,
}

/// Which access levels a `user_package_*` rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclScope {
    /// Any (`user_package_filter`).
    Any,
    /// Owner or commit (`user_package_commit_filter`).
    Commit,
    /// Watching (`user_package_watch_filter`).
    Watch,
}

impl AclScope {
    /// Whether a set of [`Acl`] bits has one this scope counts.
    pub fn admits(self, acls: u8) -> bool {
        let wanted = match self {
            AclScope::Any => 7,
            AclScope::Commit => Acl::Owner as u8 | Acl::Commit as u8,
            AclScope::Watch => Acl::Watch as u8,
        };
        acls & wanted != 0
    }
}

/// Who holds access to a package: a user, or a group (FMN's `group::<g>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A user name.
    User(String),
    /// A group name.
    Group(String),
}

impl Owner {
    /// Parses `name` or `group::name`.
    pub fn parse(text: &str) -> Owner {
        match text.strip_prefix("group::") {
            Some(group) => Owner::Group(group.to_string()),
            None => Owner::User(text.to_string()),
        }
    }
}

/// Where ownership and membership come from. Errors are one line naming what
/// was asked and what failed.
pub trait OwnershipSource: Send + Sync {
    /// Packages `owner` has access to, and how.
    fn packages_of(&self, owner: &Owner) -> Result<Vec<(String, Acl)>, String>;
    /// Who has access to `package`, and how.
    fn owners_of(&self, package: &str) -> Result<Vec<(Owner, Acl)>, String>;
    /// The groups `user` belongs to.
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String>;
    /// The members of `group`.
    fn members_of(&self, group: &str) -> Result<Vec<String>, String>;
    /// Called when a bus message says something changed: a source that keeps
    /// its own copy (a file) may read it again.
    fn changed(&self) {}
    /// One line for logs and `/state`.
    fn describe(&self) -> String;
}

/// Hits and misses of the ownership cache.
#[derive(Debug, Default)]
pub struct OwnershipCounters {
    /// Lookups answered from memory.
    pub hits: AtomicU64,
    /// Lookups that asked the source.
    pub misses: AtomicU64,
    /// Lookups the source failed.
    pub errors: AtomicU64,
    /// Entries dropped by invalidation messages.
    pub invalidations: AtomicU64,
}

/// Package bits per package name.
pub type OwnedPackages = HashMap<String, u8>;

/// The cache in front of a source.
pub struct Ownership {
    source: Arc<dyn OwnershipSource>,
    user_packages: DashMap<String, Arc<OwnedPackages>>,
    members: DashMap<String, Arc<HashSet<String>>>,
    package_users: DashMap<String, Arc<Vec<String>>>,
    counters: Arc<OwnershipCounters>,
}

impl Ownership {
    /// A cache over `source`.
    pub fn new(source: Arc<dyn OwnershipSource>) -> Ownership {
        Ownership {
            source,
            user_packages: DashMap::new(),
            members: DashMap::new(),
            package_users: DashMap::new(),
            counters: Arc::default(),
        }
    }

    /// An empty source: nobody owns anything (no source configured).
    pub fn empty() -> Ownership {
        Ownership::new(Arc::new(FileSource::from_data(OwnershipFile::default())))
    }

    /// The source's description.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<OwnershipCounters> {
        &self.counters
    }

    fn hit(&self) {
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, e: String) -> String {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// The packages of `user` and of the user's groups, with access bits
    /// (FMN's `get_packages_of_user` over the user and `group::<g>`).
    pub fn user_packages(&self, user: &str) -> Result<Arc<OwnedPackages>, String> {
        if let Some(found) = self.user_packages.get(user) {
            self.hit();
            return Ok(found.clone());
        }
        self.miss();
        let mut owned = OwnedPackages::new();
        let mut owners = vec![Owner::User(user.to_string())];
        for group in self.source.groups_of(user).map_err(|e| self.failed(e))? {
            owners.push(Owner::Group(group));
        }
        for owner in &owners {
            for (package, acl) in self.source.packages_of(owner).map_err(|e| self.failed(e))? {
                *owned.entry(package).or_default() |= acl as u8;
            }
        }
        let owned = Arc::new(owned);
        self.user_packages.insert(user.to_string(), owned.clone());
        Ok(owned)
    }

    /// The members of `group`.
    pub fn members_of(&self, group: &str) -> Result<Arc<HashSet<String>>, String> {
        if let Some(found) = self.members.get(group) {
            self.hit();
            return Ok(found.clone());
        }
        self.miss();
        let members: HashSet<String> = self
            .source
            .members_of(group)
            .map_err(|e| self.failed(e))?
            .into_iter()
            .collect();
        let members = Arc::new(members);
        self.members.insert(group.to_string(), members.clone());
        Ok(members)
    }

    /// The users with any access to `package`, directly or through a group
    /// (what the matcher's index looks up for `user_package_*` filters).
    pub fn package_users(&self, package: &str) -> Result<Arc<Vec<String>>, String> {
        if let Some(found) = self.package_users.get(package) {
            self.hit();
            return Ok(found.clone());
        }
        self.miss();
        let mut users: Vec<String> = Vec::new();
        for (owner, _) in self.source.owners_of(package).map_err(|e| self.failed(e))? {
            match owner {
                Owner::User(u) => users.push(u),
                Owner::Group(g) => users.extend(self.members_of(&g)?.iter().cloned()),
            }
        }
        users.sort();
        users.dedup();
        let users = Arc::new(users);
        self.package_users
            .insert(package.to_string(), users.clone());
        Ok(users)
    }

    /// Forgets what is known about `users` and `packages` (a `.pkgdb.` or
    /// Pagure access message).
    pub fn invalidate_packages<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        packages: impl IntoIterator<Item = &'a String>,
    ) {
        self.source.changed();
        let mut dropped = 0;
        for u in users {
            dropped += u64::from(self.user_packages.remove(u).is_some());
        }
        for p in packages {
            dropped += u64::from(self.package_users.remove(p).is_some());
        }
        self.counters
            .invalidations
            .fetch_add(dropped, Ordering::Relaxed);
    }

    /// Forgets what is known about `users`' groups and `group`'s members (a
    /// `.fas.group.` message). Package owners through groups are dropped too.
    pub fn invalidate_groups<'a>(
        &self,
        users: impl IntoIterator<Item = &'a String>,
        group: Option<&str>,
    ) {
        self.source.changed();
        let mut dropped = 0;
        for u in users {
            dropped += u64::from(self.user_packages.remove(u).is_some());
        }
        if let Some(g) = group {
            dropped += u64::from(self.members.remove(g).is_some());
        }
        dropped += self.package_users.len() as u64;
        self.package_users.clear();
        self.counters
            .invalidations
            .fetch_add(dropped, Ordering::Relaxed);
    }
}

/// The ownership file: packages with their owners per access level, and
/// groups with their members.
///
/// ```json
/// {"packages": {"python-requests": {"owner": ["ralph"], "commit": ["group::python-sig"], "watch": ["alice"]}},
///  "groups": {"python-sig": ["bob", "carol"]}}
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipFile {
    /// Package name -> access lists.
    #[serde(default)]
    pub packages: HashMap<String, PackageAccess>,
    /// Group name -> members.
    #[serde(default)]
    pub groups: HashMap<String, Vec<String>>,
}

/// Who has which access to one package (`group::<g>` names a group).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageAccess {
    /// Owners and admins.
    #[serde(default)]
    pub owner: Vec<String>,
    /// Committers.
    #[serde(default)]
    pub commit: Vec<String>,
    /// Watchers.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// Indexes built from an [`OwnershipFile`].
#[derive(Default)]
struct FileIndex {
    by_owner: HashMap<Owner, Vec<(String, Acl)>>,
    by_package: HashMap<String, Vec<(Owner, Acl)>>,
    groups_of: HashMap<String, Vec<String>>,
    members: HashMap<String, Vec<String>>,
}

impl FileIndex {
    fn build(data: OwnershipFile) -> FileIndex {
        let mut index = FileIndex::default();
        for (package, access) in data.packages {
            for (list, acl) in [
                (&access.owner, Acl::Owner),
                (&access.commit, Acl::Commit),
                (&access.watch, Acl::Watch),
            ] {
                for name in list {
                    let owner = Owner::parse(name);
                    index
                        .by_owner
                        .entry(owner.clone())
                        .or_default()
                        .push((package.clone(), acl));
                    index
                        .by_package
                        .entry(package.clone())
                        .or_default()
                        .push((owner, acl));
                }
            }
        }
        for (group, members) in data.groups {
            for m in &members {
                index
                    .groups_of
                    .entry(m.clone())
                    .or_default()
                    .push(group.clone());
            }
            index.members.insert(group, members);
        }
        index
    }
}

/// Ownership read from a JSON file ([`OwnershipFile`]), read again when it
/// changed on disk and a bus message announces a change.
pub struct FileSource {
    path: Option<PathBuf>,
    state: Mutex<(Option<SystemTime>, Arc<FileIndex>)>,
}

impl FileSource {
    /// Reads `path`; errors name the file and what was expected.
    pub fn open(path: &Path) -> Result<FileSource, String> {
        let (mtime, data) = read_file(path)?;
        Ok(FileSource {
            path: Some(path.to_path_buf()),
            state: Mutex::new((mtime, Arc::new(FileIndex::build(data)))),
        })
    }

    /// A source over data in memory.
    pub fn from_data(data: OwnershipFile) -> FileSource {
        FileSource {
            path: None,
            state: Mutex::new((None, Arc::new(FileIndex::build(data)))),
        }
    }

    fn index(&self) -> Arc<FileIndex> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }
}

fn read_file(path: &Path) -> Result<(Option<SystemTime>, OwnershipFile), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("ownership file {}: {e}", path.display()))?;
    let data: OwnershipFile = serde_json::from_str(&text).map_err(|e| {
        format!(
            "ownership file {}: {e}: expected {{\"packages\": {{name: {{\"owner\": [...], \"commit\": [...], \"watch\": [...]}}}}, \"groups\": {{name: [members]}}}}",
            path.display()
        )
    })?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((mtime, data))
}

impl OwnershipSource for FileSource {
    fn packages_of(&self, owner: &Owner) -> Result<Vec<(String, Acl)>, String> {
        Ok(self
            .index()
            .by_owner
            .get(owner)
            .cloned()
            .unwrap_or_default())
    }

    fn owners_of(&self, package: &str) -> Result<Vec<(Owner, Acl)>, String> {
        Ok(self
            .index()
            .by_package
            .get(package)
            .cloned()
            .unwrap_or_default())
    }

    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        Ok(self
            .index()
            .groups_of
            .get(user)
            .cloned()
            .unwrap_or_default())
    }

    fn members_of(&self, group: &str) -> Result<Vec<String>, String> {
        Ok(self.index().members.get(group).cloned().unwrap_or_default())
    }

    fn changed(&self) {
        let Some(path) = &self.path else { return };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if mtime == state.0 {
            return;
        }
        match read_file(path) {
            Ok((mtime, data)) => *state = (mtime, Arc::new(FileIndex::build(data))),
            Err(e) => {
                tracing::warn!(error = %e, "ownership file not read again; the previous content stays in force")
            }
        }
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("file {}", p.display()),
            None => "none".into(),
        }
    }
}

/// Ownership from HTTP services: dist-git's Pagure API for packages
/// (`/api/0/<namespace>/<package>`, `/api/0/projects?username=`,
/// `/api/0/group/<g>?projects=1`) and FASJSON for groups
/// (`/v1/users/<u>/groups/`, `/v1/groups/<g>/members/`).
pub struct HttpSource {
    distgit: String,
    fasjson: String,
    namespace: String,
    agent: ureq::Agent,
}

impl HttpSource {
    /// A source over these base URLs.
    pub fn new(distgit: &str, fasjson: &str, timeout: Duration) -> HttpSource {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        HttpSource {
            distgit: distgit.trim_end_matches('/').to_string(),
            fasjson: fasjson.trim_end_matches('/').to_string(),
            namespace: "rpms".into(),
            agent,
        }
    }

    fn get(&self, url: &str) -> Result<Option<Value>, String> {
        let mut response = self
            .agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(format!("GET {url}: HTTP {status}: expected 200"));
        }
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: expected JSON"))?;
        Ok(Some(value))
    }

    /// Pages of `key` items, following `pagination.next`.
    fn paged(&self, first: String, key: &str) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            let Some(page) = self.get(&url)? else { break };
            if let Some(list) = page.get(key).and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            next = page
                .pointer("/pagination/next")
                .and_then(Value::as_str)
                .filter(|_| pages < 100)
                .map(str::to_string);
        }
        Ok(items)
    }
}

fn pagure_acl(level: &str) -> Acl {
    match level {
        "owner" | "admin" => Acl::Owner,
        "commit" | "collaborator" => Acl::Commit,
        _ => Acl::Watch,
    }
}

impl OwnershipSource for HttpSource {
    fn packages_of(&self, owner: &Owner) -> Result<Vec<(String, Acl)>, String> {
        let projects = match owner {
            Owner::User(u) => self.paged(
                format!(
                    "{}/api/0/projects?username={u}&namespace={}&short=1&fork=0",
                    self.distgit, self.namespace
                ),
                "projects",
            )?,
            Owner::Group(g) => self.paged(
                format!("{}/api/0/group/{g}?projects=1&acl=commit", self.distgit),
                "projects",
            )?,
        };
        Ok(projects
            .iter()
            .filter(|p| {
                p.get("namespace")
                    .and_then(Value::as_str)
                    .is_none_or(|ns| ns == self.namespace)
            })
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .map(|name| (name.to_string(), Acl::Commit))
            .collect())
    }

    fn owners_of(&self, package: &str) -> Result<Vec<(Owner, Acl)>, String> {
        let url = format!("{}/api/0/{}/{package}", self.distgit, self.namespace);
        let Some(project) = self.get(&url)? else {
            return Ok(Vec::new());
        };
        let mut owners = Vec::new();
        for (key, make) in [
            ("access_users", Owner::User as fn(String) -> Owner),
            ("access_groups", Owner::Group as fn(String) -> Owner),
        ] {
            if let Some(levels) = project.get(key).and_then(Value::as_object) {
                for (level, names) in levels {
                    for name in names.as_array().into_iter().flatten() {
                        if let Some(name) = name.as_str() {
                            owners.push((make(name.to_string()), pagure_acl(level)));
                        }
                    }
                }
            }
        }
        Ok(owners)
    }

    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        let url = format!("{}/v1/users/{user}/groups/", self.fasjson);
        Ok(self
            .get(&url)?
            .and_then(|v| v.get("result").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|g| g.get("groupname").and_then(Value::as_str))
            .map(str::to_string)
            .collect())
    }

    fn members_of(&self, group: &str) -> Result<Vec<String>, String> {
        let url = format!("{}/v1/groups/{group}/members/", self.fasjson);
        Ok(self
            .get(&url)?
            .and_then(|v| v.get("result").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.get("username").and_then(Value::as_str))
            .map(str::to_string)
            .collect())
    }

    fn describe(&self) -> String {
        format!("dist-git {} and FASJSON {}", self.distgit, self.fasjson)
    }
}
