//! The metadata of one repository as both Bitbucket doubles serve it: pull requests with
//! their comments, activity and tasks; issues with comments, changes and attachments;
//! settings, branch restrictions, branching model, default reviewers, deploy keys,
//! webhooks, pipelines configuration, variables and schedules, deployment environments
//! and downloads. The Cloud double ([`crate::cloud`]) renders it as REST 2.0 JSON, the
//! Data Center double ([`crate::dc`]) as REST 1.0 JSON; this module holds only the model.
//!
//! Tests change it under the server's lock:
//! ```ignore
//! cloud.metadata("ws", "repo", |m| {
//!     let pr = m.add_pull_request(NewPullRequest::new("Fix", "alice"));
//!     m.add_pr_comment(pr, "bob", "Looks good");
//!     m.approve_pr(pr, "carol");
//! });
//! ```
//! or fill it with [`populate`] and a [`Spec`] (deterministic content, authors and dates).
//!
//! Times are milliseconds since the Unix epoch, from a per-repository clock that starts at
//! [`CLOCK_START_MS`] and advances one minute per event ([`RepoMetadata::tick`]); set it with
//! [`RepoMetadata::set_clock`]. As on the real servers, adding a comment, approval, task or
//! update to a pull request (or a comment, change or attachment to an issue) moves the
//! item's `updated_on` to the event's time. Users are plain names (account id, nickname
//! and DC user name alike).

use std::sync::Arc;

/// 2026-01-01T00:00:00Z: where every repository's clock starts.
pub const CLOCK_START_MS: u64 = 1_767_225_600_000;
/// How far the clock advances per event.
pub const TICK_MS: u64 = 60_000;

/// A pull request's state. Data Center has no `SUPERSEDED`: it shows such a pull request
/// as `DECLINED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Merged,
    Declined,
    Superseded,
}

impl PrState {
    /// Cloud's name: `OPEN`, `MERGED`, `DECLINED`, `SUPERSEDED`.
    pub fn cloud(self) -> &'static str {
        match self {
            PrState::Open => "OPEN",
            PrState::Merged => "MERGED",
            PrState::Declined => "DECLINED",
            PrState::Superseded => "SUPERSEDED",
        }
    }

    /// Data Center's name: `OPEN`, `MERGED`, `DECLINED`.
    pub fn dc(self) -> &'static str {
        match self {
            PrState::Superseded => "DECLINED",
            other => other.cloud(),
        }
    }
}

/// What a test gives to [`RepoMetadata::add_pull_request`].
#[derive(Debug, Clone)]
pub struct NewPullRequest {
    pub title: String,
    pub description: String,
    pub author: String,
    pub source: String,
    pub destination: String,
    pub state: PrState,
    pub reviewers: Vec<String>,
}

impl NewPullRequest {
    /// An open pull request from `feature/<slugified title>` to `main`.
    pub fn new(title: &str, author: &str) -> NewPullRequest {
        let branch: String = title
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        NewPullRequest {
            title: title.to_string(),
            description: format!("Description of {title}"),
            author: author.to_string(),
            source: format!("feature/{branch}"),
            destination: "main".to_string(),
            state: PrState::Open,
            reviewers: Vec::new(),
        }
    }
}

/// Where an inline comment sits: `from` is the line in the old file, `to` in the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    pub path: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
}

/// A comment on a pull request.
#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub text: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub inline: Option<Inline>,
    /// The comment this one replies to.
    pub parent: Option<u64>,
}

/// One entry of a pull request's activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivityKind {
    /// The pull request was opened or changed (state, title, ...): a Cloud `update`.
    Update {
        state: PrState,
    },
    Approval,
    ChangesRequested,
    /// A comment was added (its id).
    Comment(u64),
}

#[derive(Debug, Clone)]
pub struct Activity {
    pub id: u64,
    pub user: String,
    pub at_ms: u64,
    pub kind: ActivityKind,
}

/// A pull request task.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: u64,
    pub creator: String,
    pub text: String,
    pub resolved: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone)]
pub struct PullRequest {
    pub id: u64,
    pub title: String,
    pub description: String,
    pub state: PrState,
    pub author: String,
    pub source: String,
    pub destination: String,
    pub reviewers: Vec<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Users who approved (in order).
    pub approvals: Vec<String>,
    /// Users who requested changes.
    pub changes_requested: Vec<String>,
    pub comments: Vec<Comment>,
    pub activity: Vec<Activity>,
    pub tasks: Vec<Task>,
    /// Data Center's optimistic-locking version: bumped by every change.
    pub version: u64,
}

/// A file attached to an issue, or a repository download.
#[derive(Debug, Clone)]
pub struct FileItem {
    pub name: String,
    pub bytes: Arc<Vec<u8>>,
    pub user: String,
    pub created_ms: u64,
}

#[derive(Debug, Clone)]
pub struct IssueComment {
    pub id: u64,
    pub author: String,
    pub text: String,
    pub created_ms: u64,
}

/// One change of an issue's field (`state`, `kind`, `priority`, `assignee`, ...).
#[derive(Debug, Clone)]
pub struct IssueChange {
    pub id: u64,
    pub user: String,
    pub created_ms: u64,
    pub field: String,
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub id: u64,
    pub title: String,
    pub content: String,
    pub reporter: String,
    pub assignee: Option<String>,
    /// `new`, `open`, `resolved`, `on hold`, `invalid`, `duplicate`, `wontfix`, `closed`.
    pub state: String,
    /// `bug`, `enhancement`, `proposal`, `task`.
    pub kind: String,
    /// `trivial`, `minor`, `major`, `critical`, `blocker`.
    pub priority: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub comments: Vec<IssueComment>,
    pub changes: Vec<IssueChange>,
    pub attachments: Vec<FileItem>,
}

/// Repository settings (Cloud's repository object fields; DC's `settings/pull-requests`).
#[derive(Debug, Clone)]
pub struct RepoSettings {
    pub description: String,
    pub language: String,
    pub website: Option<String>,
    /// Cloud: `allow_forks`, `no_public_forks`, `no_forks`.
    pub fork_policy: String,
    /// DC: `requiredApprovers`.
    pub required_approvers: u32,
    /// DC: `requiredAllTasksComplete`.
    pub required_all_tasks_complete: bool,
    /// DC merge strategy ids (`no-ff`, `squash`, `ff`, ...); the first is the default.
    pub merge_strategies: Vec<String>,
}

impl Default for RepoSettings {
    fn default() -> Self {
        RepoSettings {
            description: String::new(),
            language: String::new(),
            website: None,
            fork_policy: "allow_forks".to_string(),
            required_approvers: 0,
            required_all_tasks_complete: false,
            merge_strategies: vec!["no-ff".to_string()],
        }
    }
}

/// A branch restriction. `kind` uses Cloud's names (`push`, `delete`, `force`,
/// `restrict_merges`, `require_approvals_to_merge`, ...); DC maps `push` → `read-only`,
/// `delete` → `no-deletes`, `force` → `fast-forward-only`, `restrict_merges` →
/// `pull-request-only` and passes other names through.
#[derive(Debug, Clone)]
pub struct BranchRestriction {
    pub id: u64,
    pub kind: String,
    /// A glob such as `main` or `release/*`.
    pub pattern: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub value: Option<u64>,
}

/// The branching model: development/production branches (`None`: the main branch /
/// disabled) and branch type prefixes (`feature` → `feature/`, ...).
#[derive(Debug, Clone)]
pub struct BranchingModel {
    pub development: Option<String>,
    pub production: Option<String>,
    /// (kind, prefix), kind one of `feature`, `bugfix`, `release`, `hotfix`.
    pub types: Vec<(String, String)>,
}

impl Default for BranchingModel {
    fn default() -> Self {
        BranchingModel {
            development: None,
            production: None,
            types: ["feature", "bugfix", "release", "hotfix"]
                .iter()
                .map(|k| (k.to_string(), format!("{k}/")))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeployKey {
    pub id: u64,
    pub label: String,
    /// The public key (`ssh-ed25519 AAAA...`).
    pub key: String,
    pub created_ms: u64,
}

/// A webhook. Its secret is never returned by either API (Cloud says `secret_set`).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: u64,
    pub description: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Option<String>,
    pub active: bool,
    pub created_ms: u64,
}

/// A pipeline or deployment variable; a secured one is listed without its value.
#[derive(Debug, Clone)]
pub struct Variable {
    pub id: u64,
    pub key: String,
    pub value: String,
    pub secured: bool,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: u64,
    pub branch: String,
    /// Quartz cron, e.g. `0 0 12 * * ? *`.
    pub cron: String,
    pub enabled: bool,
    pub created_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub id: u64,
    pub name: String,
    /// `Test`, `Staging` or `Production`.
    pub environment_type: String,
    pub variables: Vec<Variable>,
}

/// Everything a full backup reads of one repository.
#[derive(Debug, Clone)]
pub struct RepoMetadata {
    pub pull_requests: Vec<PullRequest>,
    /// Cloud's issue tracker; off by default (the issue endpoints then answer 404).
    pub issue_tracker: bool,
    pub issues: Vec<Issue>,
    pub settings: RepoSettings,
    pub branch_restrictions: Vec<BranchRestriction>,
    pub branching_model: BranchingModel,
    pub default_reviewers: Vec<String>,
    pub deploy_keys: Vec<DeployKey>,
    pub webhooks: Vec<Webhook>,
    pub pipelines_enabled: bool,
    pub pipeline_variables: Vec<Variable>,
    pub pipeline_schedules: Vec<Schedule>,
    pub environments: Vec<Environment>,
    pub downloads: Vec<FileItem>,
    clock_ms: u64,
    next_id: u64,
}

impl Default for RepoMetadata {
    fn default() -> Self {
        RepoMetadata {
            pull_requests: Vec::new(),
            issue_tracker: false,
            issues: Vec::new(),
            settings: RepoSettings::default(),
            branch_restrictions: Vec::new(),
            branching_model: BranchingModel::default(),
            default_reviewers: Vec::new(),
            deploy_keys: Vec::new(),
            webhooks: Vec::new(),
            pipelines_enabled: false,
            pipeline_variables: Vec::new(),
            pipeline_schedules: Vec::new(),
            environments: Vec::new(),
            downloads: Vec::new(),
            clock_ms: CLOCK_START_MS,
            next_id: 1,
        }
    }
}

impl RepoMetadata {
    /// The clock's current time (ms since the epoch).
    pub fn now(&self) -> u64 {
        self.clock_ms
    }

    /// Sets the clock (later events happen after `ms`).
    pub fn set_clock(&mut self, ms: u64) {
        self.clock_ms = ms;
    }

    /// Advances the clock by [`TICK_MS`] and returns the new time.
    pub fn tick(&mut self) -> u64 {
        self.clock_ms += TICK_MS;
        self.clock_ms
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A fresh id for a comment, change, setting... (what the doubles' write
    /// endpoints create).
    pub fn new_id(&mut self) -> u64 {
        self.id()
    }

    /// A pull request, by id.
    pub fn pr(&self, id: u64) -> Option<&PullRequest> {
        self.pull_requests.iter().find(|p| p.id == id)
    }

    fn pr_mut(&mut self, id: u64) -> &mut PullRequest {
        self.pull_requests
            .iter_mut()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no pull request #{id}"))
    }

    /// An issue, by id.
    pub fn issue(&self, id: u64) -> Option<&Issue> {
        self.issues.iter().find(|i| i.id == id)
    }

    fn issue_mut(&mut self, id: u64) -> &mut Issue {
        self.issues
            .iter_mut()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no issue #{id}"))
    }

    /// Opens a pull request (ids 1, 2, ...); its activity starts with an `update`. A
    /// state other than `Open` adds a second `update` (the close).
    pub fn add_pull_request(&mut self, new: NewPullRequest) -> u64 {
        let id = self.pull_requests.len() as u64 + 1;
        let at = self.tick();
        let activity_id = self.id();
        self.pull_requests.push(PullRequest {
            id,
            title: new.title,
            description: new.description,
            state: PrState::Open,
            author: new.author.clone(),
            source: new.source,
            destination: new.destination,
            reviewers: new.reviewers,
            created_ms: at,
            updated_ms: at,
            approvals: Vec::new(),
            changes_requested: Vec::new(),
            comments: Vec::new(),
            activity: vec![Activity {
                id: activity_id,
                user: new.author.clone(),
                at_ms: at,
                kind: ActivityKind::Update {
                    state: PrState::Open,
                },
            }],
            tasks: Vec::new(),
            version: 0,
        });
        if new.state != PrState::Open {
            self.set_pr_state(id, &new.author, new.state);
        }
        id
    }

    fn pr_event(&mut self, pr: u64, user: &str, kind: ActivityKind) -> u64 {
        let at = self.tick();
        let id = self.id();
        let p = self.pr_mut(pr);
        p.activity.push(Activity {
            id,
            user: user.to_string(),
            at_ms: at,
            kind,
        });
        p.updated_ms = at;
        p.version += 1;
        at
    }

    /// Merges, declines, supersedes or reopens a pull request (an `update` activity).
    pub fn set_pr_state(&mut self, pr: u64, user: &str, state: PrState) {
        self.pr_mut(pr).state = state;
        self.pr_event(pr, user, ActivityKind::Update { state });
    }

    /// Changes a pull request's title (an `update` activity).
    pub fn set_pr_title(&mut self, pr: u64, user: &str, title: &str) {
        self.pr_mut(pr).title = title.to_string();
        let state = self.pr_mut(pr).state;
        self.pr_event(pr, user, ActivityKind::Update { state });
    }

    /// `user` approves the pull request.
    pub fn approve_pr(&mut self, pr: u64, user: &str) {
        self.pr_mut(pr).approvals.push(user.to_string());
        self.pr_event(pr, user, ActivityKind::Approval);
    }

    /// `user` requests changes.
    pub fn request_changes(&mut self, pr: u64, user: &str) {
        self.pr_mut(pr).changes_requested.push(user.to_string());
        self.pr_event(pr, user, ActivityKind::ChangesRequested);
    }

    fn comment(&mut self, pr: u64, c: (&str, &str, Option<Inline>, Option<u64>)) -> u64 {
        let (author, text, inline, parent) = c;
        let id = self.id();
        let at = self.pr_event(pr, author, ActivityKind::Comment(id));
        self.pr_mut(pr).comments.push(Comment {
            id,
            author: author.to_string(),
            text: text.to_string(),
            created_ms: at,
            updated_ms: at,
            inline,
            parent,
        });
        id
    }

    /// A general comment; returns its id.
    pub fn add_pr_comment(&mut self, pr: u64, author: &str, text: &str) -> u64 {
        self.comment(pr, (author, text, None, None))
    }

    /// An inline comment on `path` (`from`: old line, `to`: new line).
    pub fn add_pr_inline_comment(
        &mut self,
        pr: u64,
        author: &str,
        text: &str,
        inline: Inline,
    ) -> u64 {
        self.comment(pr, (author, text, Some(inline), None))
    }

    /// A reply to comment `parent` (inline if the parent is).
    pub fn add_pr_reply(&mut self, pr: u64, parent: u64, author: &str, text: &str) -> u64 {
        let inline = self
            .pr(pr)
            .and_then(|p| p.comments.iter().find(|c| c.id == parent))
            .unwrap_or_else(|| panic!("no comment {parent} on pull request #{pr}"))
            .inline
            .clone();
        self.comment(pr, (author, text, inline, Some(parent)))
    }

    /// A task; returns its id.
    pub fn add_pr_task(&mut self, pr: u64, creator: &str, text: &str, resolved: bool) -> u64 {
        let id = self.id();
        let at = self.tick();
        let p = self.pr_mut(pr);
        p.tasks.push(Task {
            id,
            creator: creator.to_string(),
            text: text.to_string(),
            resolved,
            created_ms: at,
            updated_ms: at,
        });
        p.updated_ms = at;
        p.version += 1;
        id
    }

    /// Edits comment `id` of a pull request (its and the pull request's update time move).
    pub fn edit_pr_comment(&mut self, pr: u64, id: u64, text: &str) {
        let at = self.tick();
        let p = self.pr_mut(pr);
        let c = p
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no comment {id} on pull request #{pr}"));
        c.text = text.to_string();
        c.updated_ms = at;
        p.updated_ms = at;
        p.version += 1;
    }

    /// Resolves (or reopens) task `id` of a pull request (the pull request's update time moves).
    pub fn set_pr_task_resolved(&mut self, pr: u64, id: u64, resolved: bool) {
        let at = self.tick();
        let p = self.pr_mut(pr);
        let t = p
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("no task {id} on pull request #{pr}"));
        t.resolved = resolved;
        t.updated_ms = at;
        p.updated_ms = at;
        p.version += 1;
    }

    /// Opens an issue (ids 1, 2, ...; `new`, `bug`, `major`). Does not turn the tracker on.
    pub fn add_issue(&mut self, title: &str, reporter: &str) -> u64 {
        let id = self.issues.len() as u64 + 1;
        let at = self.tick();
        self.issues.push(Issue {
            id,
            title: title.to_string(),
            content: format!("Details of {title}"),
            reporter: reporter.to_string(),
            assignee: None,
            state: "new".to_string(),
            kind: "bug".to_string(),
            priority: "major".to_string(),
            created_ms: at,
            updated_ms: at,
            comments: Vec::new(),
            changes: Vec::new(),
            attachments: Vec::new(),
        });
        id
    }

    /// A comment on an issue; returns its id.
    pub fn add_issue_comment(&mut self, issue: u64, author: &str, text: &str) -> u64 {
        let id = self.id();
        let at = self.tick();
        let i = self.issue_mut(issue);
        i.comments.push(IssueComment {
            id,
            author: author.to_string(),
            text: text.to_string(),
            created_ms: at,
        });
        i.updated_ms = at;
        id
    }

    /// Changes a field of an issue (`state`, `kind`, `priority`, `assignee`, `title`,
    /// `content`) and records the change; returns the change's id.
    pub fn change_issue(&mut self, issue: u64, user: &str, field: &str, new: &str) -> u64 {
        let id = self.id();
        let at = self.tick();
        let i = self.issue_mut(issue);
        let slot = match field {
            "state" => &mut i.state,
            "kind" => &mut i.kind,
            "priority" => &mut i.priority,
            "title" => &mut i.title,
            "content" => &mut i.content,
            "assignee" => i.assignee.get_or_insert_with(String::new),
            other => panic!("issues have no field {other:?}"),
        };
        let old = std::mem::replace(slot, new.to_string());
        i.changes.push(IssueChange {
            id,
            user: user.to_string(),
            created_ms: at,
            field: field.to_string(),
            old,
            new: new.to_string(),
        });
        i.updated_ms = at;
        id
    }

    /// Attaches a file to an issue.
    pub fn add_issue_attachment(&mut self, issue: u64, user: &str, name: &str, bytes: &[u8]) {
        let at = self.tick();
        let i = self.issue_mut(issue);
        i.attachments.push(FileItem {
            name: name.to_string(),
            bytes: Arc::new(bytes.to_vec()),
            user: user.to_string(),
            created_ms: at,
        });
        i.updated_ms = at;
    }

    /// A branch restriction; returns its id.
    pub fn add_branch_restriction(
        &mut self,
        kind: &str,
        pattern: &str,
        users: &[&str],
        value: Option<u64>,
    ) -> u64 {
        let id = self.id();
        self.branch_restrictions.push(BranchRestriction {
            id,
            kind: kind.to_string(),
            pattern: pattern.to_string(),
            users: users.iter().map(|u| u.to_string()).collect(),
            groups: Vec::new(),
            value,
        });
        id
    }

    /// A deploy (access) key; returns its id.
    pub fn add_deploy_key(&mut self, label: &str, key: &str) -> u64 {
        let id = self.id();
        let at = self.tick();
        self.deploy_keys.push(DeployKey {
            id,
            label: label.to_string(),
            key: key.to_string(),
            created_ms: at,
        });
        id
    }

    /// A webhook; returns its id.
    pub fn add_webhook(&mut self, url: &str, events: &[&str], secret: Option<&str>) -> u64 {
        let id = self.id();
        let at = self.tick();
        self.webhooks.push(Webhook {
            id,
            description: format!("Hook to {url}"),
            url: url.to_string(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: secret.map(str::to_string),
            active: true,
            created_ms: at,
        });
        id
    }

    /// A repository pipeline variable (turns Pipelines on); returns its id.
    pub fn add_pipeline_variable(&mut self, key: &str, value: &str, secured: bool) -> u64 {
        let id = self.id();
        self.pipelines_enabled = true;
        self.pipeline_variables.push(Variable {
            id,
            key: key.to_string(),
            value: value.to_string(),
            secured,
        });
        id
    }

    /// A pipeline schedule (turns Pipelines on); returns its id.
    pub fn add_pipeline_schedule(&mut self, branch: &str, cron: &str) -> u64 {
        let id = self.id();
        let at = self.tick();
        self.pipelines_enabled = true;
        self.pipeline_schedules.push(Schedule {
            id,
            branch: branch.to_string(),
            cron: cron.to_string(),
            enabled: true,
            created_ms: at,
        });
        id
    }

    /// A deployment environment (`Test`, `Staging` or `Production`); returns its id.
    pub fn add_environment(&mut self, name: &str, environment_type: &str) -> u64 {
        let id = self.id();
        self.environments.push(Environment {
            id,
            name: name.to_string(),
            environment_type: environment_type.to_string(),
            variables: Vec::new(),
        });
        id
    }

    /// A variable of environment `env`; returns its id.
    pub fn add_environment_variable(
        &mut self,
        env: u64,
        key: &str,
        value: &str,
        secured: bool,
    ) -> u64 {
        let id = self.id();
        let e = self
            .environments
            .iter_mut()
            .find(|e| e.id == env)
            .unwrap_or_else(|| panic!("no environment {env}"));
        e.variables.push(Variable {
            id,
            key: key.to_string(),
            value: value.to_string(),
            secured,
        });
        id
    }

    /// A repository download (a file).
    pub fn add_download(&mut self, name: &str, user: &str, bytes: &[u8]) {
        let at = self.tick();
        self.downloads.push(FileItem {
            name: name.to_string(),
            bytes: Arc::new(bytes.to_vec()),
            user: user.to_string(),
            created_ms: at,
        });
    }
}

/// What [`populate`] creates.
#[derive(Debug, Clone)]
pub struct Spec {
    pub pull_requests: usize,
    pub comments_per_pr: usize,
    pub tasks_per_pr: usize,
    pub issues: usize,
    pub comments_per_issue: usize,
    pub attachments_per_issue: usize,
    /// Bytes of each attachment and download.
    pub file_size: usize,
    pub downloads: usize,
    /// Settings, restrictions, keys, hooks, pipelines, environments: one or two of each.
    pub settings: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            pull_requests: 5,
            comments_per_pr: 3,
            tasks_per_pr: 1,
            issues: 3,
            comments_per_issue: 2,
            attachments_per_issue: 1,
            file_size: 1024,
            downloads: 1,
            settings: true,
        }
    }
}

/// The authors [`populate`] cycles through.
pub const AUTHORS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// Deterministic bytes of a generated file.
pub fn file_bytes(seed: &str, size: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Fills `m` with deterministic content (the same `spec` always gives the same items,
/// authors and dates, on a fresh [`RepoMetadata`]): pull requests in the states OPEN,
/// MERGED, DECLINED, SUPERSEDED in turn, each with comments (every third inline, every
/// fourth a reply), an approval, a changes request on every fifth, and tasks; issues (the
/// tracker is turned on when `spec.issues > 0`) with comments, a state change and
/// attachments; downloads; and, with `spec.settings`, one or two of every setting.
pub fn populate(m: &mut RepoMetadata, spec: &Spec) {
    let states = [
        PrState::Open,
        PrState::Merged,
        PrState::Declined,
        PrState::Superseded,
    ];
    for i in 0..spec.pull_requests {
        let author = AUTHORS[i % AUTHORS.len()];
        let mut new = NewPullRequest::new(&format!("Change number {}", i + 1), author);
        new.reviewers = vec![AUTHORS[(i + 1) % AUTHORS.len()].to_string()];
        let pr = m.add_pull_request(new);
        for j in 0..spec.comments_per_pr {
            let who = AUTHORS[(i + j + 1) % AUTHORS.len()];
            let text = format!("Comment {} on pull request {}", j + 1, pr);
            if j % 4 == 3 {
                let parent = m.pr(pr).and_then(|p| p.comments.first()).map(|c| c.id);
                if let Some(parent) = parent {
                    m.add_pr_reply(pr, parent, who, &text);
                    continue;
                }
            }
            if j % 3 == 2 {
                let inline = Inline {
                    path: format!("src/file{}.rs", j),
                    from: None,
                    to: Some(j as u32 + 1),
                };
                m.add_pr_inline_comment(pr, who, &text, inline);
            } else {
                m.add_pr_comment(pr, who, &text);
            }
        }
        for t in 0..spec.tasks_per_pr {
            m.add_pr_task(
                pr,
                author,
                &format!("Task {} of pull request {}", t + 1, pr),
                t % 2 == 1,
            );
        }
        m.approve_pr(pr, AUTHORS[(i + 1) % AUTHORS.len()]);
        if i % 5 == 4 {
            m.request_changes(pr, AUTHORS[(i + 2) % AUTHORS.len()]);
        }
        let state = states[i % states.len()];
        if state != PrState::Open {
            m.set_pr_state(pr, author, state);
        }
    }
    if spec.issues > 0 {
        m.issue_tracker = true;
    }
    for i in 0..spec.issues {
        let reporter = AUTHORS[i % AUTHORS.len()];
        let issue = m.add_issue(&format!("Problem number {}", i + 1), reporter);
        for j in 0..spec.comments_per_issue {
            let who = AUTHORS[(i + j + 1) % AUTHORS.len()];
            m.add_issue_comment(issue, who, &format!("Comment {} on issue {}", j + 1, issue));
        }
        for a in 0..spec.attachments_per_issue {
            let name = format!("attachment-{issue}-{}.bin", a + 1);
            let bytes = file_bytes(&name, spec.file_size);
            m.add_issue_attachment(issue, reporter, &name, &bytes);
        }
        if i % 2 == 1 {
            m.change_issue(issue, reporter, "state", "resolved");
        }
    }
    for d in 0..spec.downloads {
        let name = format!("release-{}.tar.gz", d + 1);
        let bytes = file_bytes(&name, spec.file_size);
        m.add_download(&name, AUTHORS[d % AUTHORS.len()], &bytes);
    }
    if spec.settings {
        populate_settings(m);
    }
}

fn populate_settings(m: &mut RepoMetadata) {
    m.settings.description = "A generated repository".to_string();
    m.settings.language = "rust".to_string();
    m.settings.required_approvers = 1;
    m.add_branch_restriction("push", "main", &["alice"], None);
    m.add_branch_restriction("require_approvals_to_merge", "main", &[], Some(1));
    m.branching_model.development = Some("develop".to_string());
    m.default_reviewers = vec!["bob".to_string(), "carol".to_string()];
    m.add_deploy_key(
        "ci",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVuZXJhdGVkIGtleSBmb3IgdGVzdHM ci@example",
    );
    m.add_webhook(
        "https://ci.example.com/hook",
        &["repo:push", "pullrequest:created"],
        Some("hook-secret"),
    );
    m.add_pipeline_variable("PLAIN", "plain-value", false);
    m.add_pipeline_variable("TOKEN", "secured-value", true);
    m.add_pipeline_schedule("main", "0 0 12 * * ? *");
    let env = m.add_environment("Production", "Production");
    m.add_environment_variable(env, "DEPLOY_URL", "https://prod.example.com", false);
    m.add_environment_variable(env, "DEPLOY_TOKEN", "deploy-secret", true);
}

/// A user's display name: the name with a capital first letter (`alice` → `Alice`).
pub fn display_name(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `ms` since the epoch as Cloud writes times: `2026-01-01T00:01:00.000000+00:00`.
pub fn cloud_time(ms: u64) -> String {
    let secs = ms / 1000;
    let micros = (ms % 1000) * 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// An RFC 3339 time in UTC (`Z` or `+00:00`, any fraction) as ms since the epoch; `None`
/// for anything else (the doubles answer 400).
pub fn parse_cloud_time(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('T')?;
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<u64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    let ms_digits: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms: u64 = ms_digits.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|days| (days * 86_400 + h * 3600 + mi * 60 + se) * 1000 + ms)
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_bumps() {
        assert_eq!(
            cloud_time(CLOCK_START_MS),
            "2026-01-01T00:00:00.000000+00:00"
        );
        assert_eq!(
            cloud_time(951_782_400_123),
            "2000-02-29T00:00:00.123000+00:00"
        );
        for ms in [CLOCK_START_MS, 951_782_400_123, CLOCK_START_MS + 86_399_999] {
            assert_eq!(parse_cloud_time(&cloud_time(ms)), Some(ms));
        }
        assert_eq!(
            parse_cloud_time("2026-01-01T00:00:00Z"),
            Some(CLOCK_START_MS)
        );
        assert_eq!(parse_cloud_time("2026-01-01T00:00:00+02:00"), None);
        let mut m = RepoMetadata::default();
        let pr = m.add_pull_request(NewPullRequest::new("A", "alice"));
        let before = m.pr(pr).unwrap().updated_ms;
        m.add_pr_comment(pr, "bob", "hi");
        assert!(m.pr(pr).unwrap().updated_ms > before);
        let i = m.add_issue("I", "bob");
        let before = m.issue(i).unwrap().updated_ms;
        m.change_issue(i, "bob", "state", "resolved");
        assert!(m.issue(i).unwrap().updated_ms > before);
        assert_eq!(m.issue(i).unwrap().changes[0].old, "new");
        let t = m.add_pr_task(pr, "bob", "do it", false);
        let before = m.pr(pr).unwrap().updated_ms;
        m.set_pr_task_resolved(pr, t, true);
        assert!(m.pr(pr).unwrap().updated_ms > before && m.pr(pr).unwrap().tasks[0].resolved);
    }

    #[test]
    fn populate_is_deterministic() {
        let spec = Spec::default();
        let (mut a, mut b) = (RepoMetadata::default(), RepoMetadata::default());
        populate(&mut a, &spec);
        populate(&mut b, &spec);
        assert_eq!(a.pull_requests.len(), 5);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.pull_requests[1].state, PrState::Merged);
        assert!(a.pull_requests[0]
            .comments
            .iter()
            .any(|c| c.inline.is_some()));
    }
}
