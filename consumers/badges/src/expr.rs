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
            ast: Arc::new(ast),
        })
    }

    /// Evaluates `expr` with `bindings` (name, value) in scope.
    pub fn eval(&self, expr: &Expr, bindings: &[(&str, Dynamic)]) -> Result<Dynamic, ExprError> {
        let mut scope = Scope::new();
        for (name, value) in bindings {
            scope.push_constant_dynamic(*name, value.clone());
        }
        let deadline = Instant::now() + self.limits.timeout;
        let previous = DEADLINE.with(|d| d.replace(Some(deadline)));
        let previous_steps = STEPS.with(|s| s.replace(0));
        let previous_stop = STOPPED.with(|s| s.replace(None));
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, &expr.ast);
        DEADLINE.with(|d| d.set(previous));
        STEPS.with(|s| s.set(previous_steps));
        let stopped = STOPPED.with(|s| s.replace(previous_stop));
        result.map_err(|e| {
            use rhai::EvalAltResult as E;
            let text = expr.text.clone();
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
pub fn to_dynamic(value: &Value) -> Dynamic {
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
