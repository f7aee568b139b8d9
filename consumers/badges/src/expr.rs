//! The sandboxed expression language that replaces fedbadges' Python `lambda`
//! nodes: [rhai](https://rhai.rs) expressions, compiled once when the rules
//! load and evaluated with a limit on operations, time and sizes.
//!
//! An expression sees the names upstream's lambdas saw: `msg` (the message
//! body) in triggers, filter values and recipients, `query` (`query.total`,
//! the count of the criteria's filter, and `query.messages`, the first page of
//! matching message bodies) in operations, and `value` in conditions.
//!
//! Only expressions compile (no statements, no loops, no function
//! definitions); `eval` and printing are disabled. An evaluation that runs
//! longer than [`Limits::timeout`] or more than [`Limits::max_operations`]
//! steps, or builds a string, array or map past the size limits, ends with
//! [`ExprError::Limit`].
//!
//! Trigger expressions usually start by looking at the topic
//! (`msg.topic.ends_with("...") && ...`). When compiling, the leading `&&`
//! operands that read nothing of the message but `msg.topic` are kept apart
//! as the expression's *topic guard*: [`Sandbox::decide_by_topic`] evaluates
//! it once per topic, so the awarder skips the expression for every message of
//! a topic the guard rules out, exactly as the full evaluation would have
//! answered (`false`, by `&&`'s short circuit).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, Scope, AST};
use serde_json::Value;

/// How much one evaluation may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wall time of one evaluation.
    pub timeout: Duration,
    /// Most interpreter steps of one evaluation.
    pub max_operations: u64,
    /// Longest string (bytes), array and map an expression may build.
    pub max_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(50),
            max_operations: 100_000,
            max_size: 65_536,
        }
    }
}

/// Why an expression failed to compile or to evaluate.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExprError {
    /// The text is not a valid expression.
    #[error("expression {text:?} does not compile: {reason}")]
    Compile {
        /// The expression.
        text: String,
        /// The parser's message.
        reason: String,
    },
    /// It ran past a limit (time, operations, size).
    #[error("expression {text:?} stopped: {reason}")]
    Limit {
        /// The expression.
        text: String,
        /// Which limit.
        reason: String,
    },
    /// It failed while running (missing field, wrong type, ...).
    #[error("expression {text:?} failed: {reason}")]
    Runtime {
        /// The expression.
        text: String,
        /// The interpreter's message.
        reason: String,
    },
    /// It returned a value of the wrong type.
    #[error("expression {text:?} returned {got}: expected {expected}")]
    Type {
        /// The expression.
        text: String,
        /// The type returned.
        got: String,
        /// The type expected.
        expected: &'static str,
    },
}

thread_local! {
    /// The deadline of the evaluation running on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Progress calls of the evaluation running on this thread. rhai's own
    /// operation count restarts inside closures that native functions
    /// (`map`, `filter`, ...) call, so the limits count calls themselves.
    static STEPS: Cell<u64> = const { Cell::new(0) };
    /// Which limit ended the evaluation running on this thread (rhai may wrap
    /// the termination in the error of the function that was running).
    static STOPPED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// What ended an evaluation early (the token given to rhai).
const OUT_OF_TIME: &str = "time limit";
const OUT_OF_STEPS: &str = "operation limit";

/// The interpreter, configured once with the limits; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    engine: Arc<Engine>,
    limits: Limits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new(Limits::default())
    }
}

impl Sandbox {
    /// An interpreter enforcing `limits`.
    pub fn new(limits: Limits) -> Sandbox {
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations.max(1))
            .set_max_string_size(limits.max_size.max(1))
            .set_max_array_size(limits.max_size.max(1))
            .set_max_map_size(limits.max_size.max(1))
            .set_max_call_levels(16)
            .set_max_expr_depths(64, 32)
            .disable_symbol("eval");
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        let max_steps = limits.max_operations.max(1);
        engine.on_progress(move |_| {
            let steps = STEPS.with(|s| {
                let n = s.get() + 1;
                s.set(n);
                n
            });
            if steps > max_steps {
                STOPPED.with(|s| s.set(Some(OUT_OF_STEPS)));
                return Some(Dynamic::from(OUT_OF_STEPS));
            }
            // Reading the clock every 256 steps keeps the check cheap.
            if !steps.is_multiple_of(256) {
                return None;
            }
            let late = DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() > d));
            late.then(|| {
                STOPPED.with(|s| s.set(Some(OUT_OF_TIME)));
                Dynamic::from(OUT_OF_TIME)
            })
        });
        Sandbox {
            engine: Arc::new(engine),
            limits,
        }
    }

    /// The limits enforced.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles `text` (an expression, not statements).
    pub fn compile(&self, text: &str) -> Result<Expr, ExprError> {
        let ast = self
            .engine
            .compile_expression(text)
            .map_err(|e| ExprError::Compile {
                text: text.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Expr {
            text: text.to_string(),
            guard: topic_guard(&ast),
            ast: Arc::new(ast),
        })
    }

    /// What the topic alone says of `expr` for messages whose `msg.topic` is
    /// `topic`: `Some(false)` when its topic guard is false (so is the
    /// expression, whatever else the message holds), `Some(true)` when the
    /// whole expression reads only the topic and is true, `None` when the rest
    /// of the message has to be looked at (no guard, a guard that is true or
    /// that fails: the full evaluation reports the failure).
    pub fn decide_by_topic(&self, expr: &Expr, topic: &str) -> Option<bool> {
        let guard = expr.guard.as_ref()?;
        let mut msg = rhai::Map::new();
        msg.insert("topic".into(), Dynamic::from(topic.to_string()));
        let ast = match guard {
            TopicGuard::Whole => &expr.ast,
            TopicGuard::Leading(ast) => ast,
        };
        let value = self
            .eval_ast(ast, &expr.text, &[("msg", Dynamic::from_map(msg))])
            .ok()?
            .as_bool()
            .ok()?;
        match (guard, value) {
            (_, false) => Some(false),
            (TopicGuard::Whole, true) => Some(true),
            (TopicGuard::Leading(_), true) => None,
        }
    }

    /// Evaluates `expr` with `bindings` (name, value) in scope.
    pub fn eval(&self, expr: &Expr, bindings: &[(&str, Dynamic)]) -> Result<Dynamic, ExprError> {
        self.eval_ast(&expr.ast, &expr.text, bindings)
    }

    /// Evaluates `ast` (compiled from `text`, named in errors) with `bindings`.
    fn eval_ast(
        &self,
        ast: &AST,
        text: &str,
        bindings: &[(&str, Dynamic)],
    ) -> Result<Dynamic, ExprError> {
        let mut scope = Scope::new();
        for (name, value) in bindings {
            scope.push_constant_dynamic(*name, value.clone());
        }
        let deadline = Instant::now() + self.limits.timeout;
        let previous = DEADLINE.with(|d| d.replace(Some(deadline)));
        let previous_steps = STEPS.with(|s| s.replace(0));
        let previous_stop = STOPPED.with(|s| s.replace(None));
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut scope, ast);
        DEADLINE.with(|d| d.set(previous));
        STEPS.with(|s| s.set(previous_steps));
        let stopped = STOPPED.with(|s| s.replace(previous_stop));
        result.map_err(|e| {
            use rhai::EvalAltResult as E;
            let text = text.to_string();
            match (*e, stopped) {
                (_, Some(OUT_OF_STEPS)) => ExprError::Limit {
                    text,
                    reason: format!("more than {} operations", self.limits.max_operations),
                },
                (_, Some(_)) | (E::ErrorTerminated(..), None) => ExprError::Limit {
                    text,
                    reason: format!("ran longer than {} ms", self.limits.timeout.as_millis()),
                },
                (E::ErrorTooManyOperations(..), _) => ExprError::Limit {
                    text,
                    reason: format!("more than {} operations", self.limits.max_operations),
                },
                (E::ErrorDataTooLarge(ref what, ..), _) => ExprError::Limit {
                    text,
                    reason: format!("{what} larger than {}", self.limits.max_size),
                },
                (ref e @ (E::ErrorStackOverflow(..) | E::ErrorTooManyModules(..)), _) => {
                    ExprError::Limit {
                        text,
                        reason: e.to_string(),
                    }
                }
                (other, _) => ExprError::Runtime {
                    text,
                    reason: other.to_string(),
                },
            }
        })
    }

    /// Evaluates `expr` and requires a boolean.
    pub fn eval_bool(&self, expr: &Expr, bindings: &[(&str, Dynamic)]) -> Result<bool, ExprError> {
        let value = self.eval(expr, bindings)?;
        value.as_bool().map_err(|got| ExprError::Type {
            text: expr.text.clone(),
            got: got.to_string(),
            expected: "a boolean (true or false)",
        })
    }

    /// Evaluates `expr` and converts the result to JSON.
    pub fn eval_json(&self, expr: &Expr, bindings: &[(&str, Dynamic)]) -> Result<Value, ExprError> {
        let value = self.eval(expr, bindings)?;
        rhai::serde::from_dynamic::<Value>(&value).map_err(|e| ExprError::Type {
            text: expr.text.clone(),
            got: e.to_string(),
            expected: "a value JSON can hold",
        })
    }
}

/// A compiled expression and its text.
#[derive(Clone)]
pub struct Expr {
    text: String,
    ast: Arc<AST>,
    guard: Option<TopicGuard>,
}

/// The part of an expression that reads nothing of the message but its topic.
#[derive(Clone)]
enum TopicGuard {
    /// The whole expression.
    Whole,
    /// Its leading `&&` operands: when they are false, so is the expression.
    Leading(Arc<AST>),
}

/// Built-in functions whose result depends on more than their arguments.
const IMPURE_FUNCTIONS: [&str; 12] = [
    "timestamp",
    "elapsed",
    "print",
    "debug",
    "eval",
    "sleep",
    "call",
    "curry",
    "Fn",
    "is_def_var",
    "is_def_fn",
    "is_shared",
];

/// The topic guard of a compiled expression, if it has one.
fn topic_guard(ast: &AST) -> Option<TopicGuard> {
    use rhai::{Expr as X, Stmt};
    let [statement] = ast.statements() else {
        return None;
    };
    let (operands, position) = match statement {
        Stmt::Expr(e) if reads_only_topic(e) => return Some(TopicGuard::Whole),
        Stmt::FnCall(call, _) if pure_call(call) => return Some(TopicGuard::Whole),
        Stmt::Expr(e) => match &**e {
            X::And(operands, position) => (operands, *position),
            _ => return None,
        },
        _ => return None,
    };
    let mut leading: rhai::StaticVec<X> = operands
        .iter()
        .take_while(|e| reads_only_topic(e))
        .cloned()
        .collect();
    let guard = match leading.len() {
        0 => return None,
        1 => leading.pop()?,
        _ => X::And(Box::new(leading), position),
    };
    let functions = rhai::Module::new();
    Some(TopicGuard::Leading(Arc::new(AST::new(
        [Stmt::Expr(Box::new(guard))],
        functions,
    ))))
}

/// Whether an expression reads nothing but constants and `msg.topic` (or
/// `msg["topic"]`) through pure functions, so its value is one per topic.
fn reads_only_topic(e: &rhai::Expr) -> bool {
    use rhai::Expr as X;
    match e {
        X::BoolConstant(..)
        | X::IntegerConstant(..)
        | X::FloatConstant(..)
        | X::CharConstant(..)
        | X::StringConstant(..)
        | X::Unit(..) => true,
        // Not a function pointer: a closure could capture anything.
        X::DynamicConstant(value, _) => !value.is_fnptr(),
        X::InterpolatedString(items, _) | X::Array(items, _) => items.iter().all(reads_only_topic),
        X::And(items, _) | X::Or(items, _) | X::Coalesce(items, _) => {
            items.iter().all(reads_only_topic)
        }
        X::FnCall(call, _) => pure_call(call),
        X::Dot(chain, ..) | X::Index(chain, ..) => match &chain.lhs {
            X::Variable(variable, ..) => {
                variable.1 == "msg"
                    && starts_with_topic(&chain.rhs, matches!(e, X::Index(..)))
                    && rest_of_chain_pure(&chain.rhs, true)
            }
            root => reads_only_topic(root) && rest_of_chain_pure(&chain.rhs, false),
        },
        _ => false,
    }
}

/// Whether the chain after `msg` begins with its `topic` (`.topic` after a
/// dot, `["topic"]` after a bracket).
fn starts_with_topic(rest: &rhai::Expr, indexed: bool) -> bool {
    use rhai::Expr as X;
    match rest {
        X::Dot(chain, ..) | X::Index(chain, ..) => starts_with_topic(&chain.lhs, indexed),
        X::Property(property, _) => !indexed && property.2 == "topic",
        X::StringConstant(name, _) => indexed && name == "topic",
        _ => false,
    }
}

/// Whether the rest of a chain (properties, method calls, indexes) is pure
/// over what it starts from; `skip_first` leaves out the element already
/// checked ([`starts_with_topic`]).
fn rest_of_chain_pure(rest: &rhai::Expr, skip_first: bool) -> bool {
    use rhai::Expr as X;
    match rest {
        X::Dot(chain, ..) | X::Index(chain, ..) => {
            (skip_first || rest_of_chain_pure(&chain.lhs, false))
                && rest_of_chain_pure(&chain.rhs, false)
        }
        _ if skip_first => true,
        X::Property(..) => true,
        X::MethodCall(call, _) => pure_call(call),
        index => reads_only_topic(index),
    }
}

/// A call of a built-in function that depends on its arguments alone, with
/// arguments that read only the topic.
fn pure_call(call: &rhai::FnCallExpr) -> bool {
    call.namespace.is_empty()
        && !IMPURE_FUNCTIONS.contains(&call.name.as_str())
        && call.args.iter().all(reads_only_topic)
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.text)
    }
}

impl Expr {
    /// The source text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A JSON value as the interpreter sees it (objects become maps, arrays
/// arrays).
pub fn to_dynamic<T: serde::Serialize + ?Sized>(value: &T) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// The closest expression to a Python lambda body, for the load error that
/// rejects it: `and`/`or`/`not` become `&&`/`||`/`!`, `True`/`False`/`None`
/// become `true`/`false`/`()`, single-quoted strings double-quoted, and
/// `.get('k')` an index. Only a hint: the rule's author checks it.
pub fn suggest_from_python(python: &str) -> String {
    let mut out = String::with_capacity(python.len());
    let mut chars = python.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let replaced = match word.as_str() {
            "and" => "&&",
            "or" => "||",
            "not" => "!",
            "True" => "true",
            "False" => "false",
            "None" => "()",
            w => w,
        };
        out.push_str(replaced);
        word.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                flush(&mut word, &mut out);
                out.push('"');
                for s in chars.by_ref() {
                    if s == c {
                        break;
                    }
                    if s == '"' {
                        out.push('\\');
                    }
                    out.push(s);
                }
                out.push('"');
            }
            c if c.is_alphanumeric() || c == '_' => word.push(c),
            _ => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    // `! x` reads better as `!x`, and `.get("k")` is an index.
    let out = out.replace("! ", "!");
    let mut fixed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find(".get(\"") {
        fixed.push_str(&rest[..at]);
        let after = &rest[at + 6..];
        match after.find("\")") {
            Some(end) => {
                fixed.push_str("[\"");
                fixed.push_str(&after[..end]);
                fixed.push_str("\"]");
                rest = &after[end + 2..];
            }
            None => {
                fixed.push_str(".get(\"");
                rest = after;
            }
        }
    }
    fixed.push_str(rest);
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expressions_see_the_message_and_return_typed_values() {
        let sandbox = Sandbox::default();
        let expr = sandbox
            .compile(r#"msg.msg.owner == "ralph" && msg.msg["new"] == 1"#)
            .unwrap();
        let msg = to_dynamic(&json!({"msg": {"owner": "ralph", "new": 1}}));
        assert!(sandbox.eval_bool(&expr, &[("msg", msg.clone())]).unwrap());
        let other = to_dynamic(&json!({"msg": {"owner": "lmacken", "new": 1}}));
        assert!(!sandbox.eval_bool(&expr, &[("msg", other)]).unwrap());
        let number = sandbox.compile(r#"msg.msg["new"] + 41"#).unwrap();
        let err = sandbox.eval_bool(&number, &[("msg", msg)]).unwrap_err();
        assert!(matches!(err, ExprError::Type { .. }), "{err}");
    }

    /// `[1..10].map(|x| [1..10].map(...).len()).len()`, `depth` deep.
    fn nested_maps(depth: usize) -> String {
        if depth == 0 {
            return "1".into();
        }
        format!(
            "[1,2,3,4,5,6,7,8,9,10].map(|x{depth}| {}).len()",
            nested_maps(depth - 1)
        )
    }

    #[test]
    fn statements_do_not_compile_and_runaway_expressions_stop() {
        let sandbox = Sandbox::new(Limits {
            timeout: Duration::from_millis(20),
            max_operations: 1_000_000_000,
            max_size: 100_000,
        });
        assert!(matches!(
            sandbox.compile("let x = 1; x"),
            Err(ExprError::Compile { .. })
        ));
        // Maps nested eight deep over ten elements: 10^8 calls, ended by the time limit.
        let slow = sandbox.compile(&nested_maps(8)).unwrap();
        let began = Instant::now();
        let err = sandbox.eval(&slow, &[]).unwrap_err();
        assert!(matches!(err, ExprError::Limit { .. }), "{err}");
        assert!(began.elapsed() < Duration::from_secs(2));
        let big = sandbox.compile(r#""x".pad(200000, "y")"#).unwrap();
        let err = sandbox.eval(&big, &[]).unwrap_err();
        assert!(matches!(err, ExprError::Limit { .. }), "{err}");
        let ops = Sandbox::new(Limits {
            max_operations: 100,
            ..Limits::default()
        });
        let err = ops.eval(&ops.compile(&nested_maps(3)).unwrap(), &[]);
        assert!(matches!(err, Err(ExprError::Limit { .. })), "{err:?}");
    }

    #[test]
    fn the_topic_guard_decides_only_what_the_full_evaluation_would() {
        let sandbox = Sandbox::default();
        let texts = [
            // A guard, then the rest of the message.
            r#"msg.topic.ends_with(".x") && msg.i % 3 != 7"#,
            r#"msg["topic"].len() > 12 && msg.topic.contains("prod") && msg.i == 1"#,
            // Only the topic.
            r#"msg.topic.ends_with(".x")"#,
            r#"!(msg.topic in ["a.b.c.x", "a.b.c.y"])"#,
            r#"msg.topic.split(".")[3] == "c" || msg.topic == "z""#,
            // No guard: the message first, an impure call, another variable,
            // an `||` reaching past the topic, a guard that fails.
            r#"msg.i == 1 && msg.topic.ends_with(".x")"#,
            r#"timestamp().elapsed > 0.0 && msg.topic.ends_with(".x")"#,
            r#"msg.topic.ends_with(".x") || msg.i == 1"#,
            r#"msg.topic.no_such_method() && msg.i == 1"#,
            r#"msg.msg.topic == "a.b.c.x""#,
        ];
        let topics = ["a.b.c.x", "a.b.c.y", "org.fedoraproject.prod.c.x", "z"];
        let mut decided = 0;
        for text in texts {
            let expr = sandbox.compile(text).unwrap();
            for topic in topics {
                let Some(answer) = sandbox.decide_by_topic(&expr, topic) else {
                    continue;
                };
                decided += 1;
                for i in 0..4 {
                    let msg =
                        to_dynamic(&json!({"topic": topic, "i": i, "msg": {"topic": "a.b.c.x"}}));
                    assert_eq!(
                        sandbox.eval_bool(&expr, &[("msg", msg)]),
                        Ok(answer),
                        "{text} on {topic}"
                    );
                }
            }
        }
        // 2 + 3 + 4 + 4 + 3: the guards rule out the topics they can; "z"
        // has no fourth part, so that guard fails and leaves it undecided.
        assert_eq!(decided, 16, "guards decided too little or too much");
        let undecided = [5, 6, 7, 8, 9].map(|i| sandbox.compile(texts[i]).unwrap());
        for expr in &undecided {
            for topic in topics {
                assert_eq!(sandbox.decide_by_topic(expr, topic), None, "{expr:?}");
            }
        }
        // A guard that holds leaves the rest to the message.
        let guarded = sandbox.compile(texts[0]).unwrap();
        assert_eq!(sandbox.decide_by_topic(&guarded, "a.b.c.x"), None);
        assert_eq!(sandbox.decide_by_topic(&guarded, "a.b.c.y"), Some(false));
    }

    #[test]
    fn python_lambdas_get_a_suggested_expression() {
        let suggestion =
            suggest_from_python("msg['msg']['owner'] == 'ralph' and not msg['msg'].get('x')");
        assert_eq!(
            suggestion,
            r#"msg["msg"]["owner"] == "ralph" && !msg["msg"]["x"]"#
        );
        assert!(Sandbox::default().compile(&suggestion).is_ok());
        assert_eq!(
            suggest_from_python("value > 10 or value is None"),
            "value > 10 || value is ()"
        );
    }
}
