//! Potentials typed as text, for `thermoflow sweep --energy 'EXPR' --dim D`.
//!
//! ```text
//! expr  = term  (('+' | '-') term)*
//! term  = unary (('*' | '/') unary)*
//! unary = '-' unary | power
//! power = atom ('^' unary)?            right-associative: 2^3^2 = 2^9, -x0^2 = -(x0^2)
//! atom  = number | 'pi' | 'x' index | 'T' | name '(' expr ')' | '(' expr ')'
//! name  = exp | log | sqrt | sin | cos
//! ```
//!
//! `T`, the temperature, only in observables ([`Expression::parse_observable`]: `x0^2/T`); an
//! energy U(x) does not depend on it. A quantity derived from observables' averages names them
//! instead of coordinates ([`Expression::parse_named`]: `1 - m4/(3*m2^2)`).
//!
//! The parsed tree evaluates on any [`DualNum`]: on `f64` for energies and on dual numbers
//! for exact gradients (one pass per coordinate, [`mod@super::custom`]). An integer exponent is
//! `powi` (so `x0^4` is defined for negative x0), any other `a^b` is `exp(b·ln a)`. A mistake
//! is an error naming the column and showing the text up to it.

use num_dual::DualNum;

use crate::error::{input_err, Result};

/// A parsed potential.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    text: String,
    root: Node,
    vars: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Num(f64),
    Var(usize),
    Temp,
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>),
    PowI(Box<Node>, i32),
    Call(Func, Box<Node>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    Exp,
    Log,
    Sqrt,
    Sin,
    Cos,
}

impl Expression {
    /// Parse the energy `text`; its coordinates are `x0, x1, …`.
    pub fn parse(text: &str) -> Result<Expression> {
        Expression::parse_with(text, false, None)
    }

    /// Parse an observable's `text`: coordinates `x0, x1, …` and the temperature `T`
    /// ([`Expression::eval_at`]).
    pub fn parse_observable(text: &str) -> Result<Expression> {
        Expression::parse_with(text, true, None)
    }

    /// Parse `text` whose variables are `names` (variable k is `names[k]`; letters, digits and
    /// `_`) and the temperature `T`, for [`Expression::eval_at`] on their values.
    pub fn parse_named(text: &str, names: &[&str]) -> Result<Expression> {
        Expression::parse_with(text, true, Some(names))
    }

    fn parse_with(text: &str, temperature: bool, names: Option<&[&str]>) -> Result<Expression> {
        let mut p = Parser {
            s: text.as_bytes(),
            text,
            i: 0,
            vars: 0,
            temperature,
            names,
        };
        let root = p.expr()?;
        p.skip();
        if p.i < p.s.len() {
            return p.fail("expected an operator (+ - * / ^) or the end");
        }
        Ok(Expression {
            text: text.to_string(),
            root,
            vars: p.vars,
        })
    }

    /// The text it was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// One more than the highest coordinate index it uses (0 for a constant).
    pub fn coordinates(&self) -> usize {
        self.vars
    }

    /// U(x) on any dual number type (`f64` included).
    pub fn eval<D: DualNum<Primitive = f64> + Copy>(&self, x: &[D]) -> D {
        eval(&self.root, x, D::from(f64::NAN))
    }

    /// An observable's O(x, T) ([`Expression::parse_observable`]), or a derived quantity's
    /// f(m, T) ([`Expression::parse_named`]), on any dual number type (`f64` included).
    pub fn eval_at<D: DualNum<Primitive = f64> + Copy>(&self, x: &[D], t: D) -> D {
        eval(&self.root, x, t)
    }

    /// Whether variable `k` appears.
    pub fn uses(&self, k: usize) -> bool {
        fn find(n: &Node, k: usize) -> bool {
            match n {
                Node::Var(i) => *i == k,
                Node::Num(_) | Node::Temp => false,
                Node::Neg(a) | Node::PowI(a, _) | Node::Call(_, a) => find(a, k),
                Node::Bin(_, a, b) => find(a, k) || find(b, k),
            }
        }
        find(&self.root, k)
    }
}

fn eval<D: DualNum<Primitive = f64> + Copy>(n: &Node, x: &[D], t: D) -> D {
    match n {
        Node::Num(v) => D::from(*v),
        Node::Var(i) => x[*i],
        Node::Temp => t,
        Node::Neg(a) => -eval(a, x, t),
        Node::Bin(op, a, b) => {
            let (a, b) = (eval(a, x, t), eval(b, x, t));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                '/' => a / b,
                _ => (b * a.ln()).exp(),
            }
        }
        Node::PowI(a, k) => eval(a, x, t).powi(*k),
        Node::Call(f, a) => {
            let a = eval(a, x, t);
            match f {
                Func::Exp => a.exp(),
                Func::Log => a.ln(),
                Func::Sqrt => a.sqrt(),
                Func::Sin => a.sin(),
                Func::Cos => a.cos(),
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    vars: usize,
    /// Whether `T` may appear (an observable, not an energy).
    temperature: bool,
    /// Named variables instead of coordinates (a derived quantity's observables).
    names: Option<&'a [&'a str]>,
}

impl Parser<'_> {
    fn fail<T>(&self, what: &str) -> Result<T> {
        let shown = self.text.get(..self.i).unwrap_or(self.text);
        let kind = if self.temperature { "" } else { "energy " };
        input_err(format!(
            "{kind}expression, column {}: {what} (after \"{shown}\")",
            self.i + 1
        ))
    }
    fn skip(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.s.get(self.i).copied()
    }
    fn expr(&mut self) -> Result<Node> {
        let mut a = self.term()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            a = Node::Bin(c as char, Box::new(a), Box::new(self.term()?));
        }
        Ok(a)
    }
    fn term(&mut self) -> Result<Node> {
        let mut a = self.unary()?;
        while let Some(c @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            a = Node::Bin(c as char, Box::new(a), Box::new(self.unary()?));
        }
        Ok(a)
    }
    fn unary(&mut self) -> Result<Node> {
        if self.peek() == Some(b'-') {
            self.i += 1;
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        self.power()
    }
    fn power(&mut self) -> Result<Node> {
        let a = self.atom()?;
        if self.peek() != Some(b'^') {
            return Ok(a);
        }
        self.i += 1;
        let b = self.unary()?;
        // A constant integer exponent, possibly negative: powi (defined for a < 0).
        let k = match &b {
            Node::Num(k) => Some(*k),
            Node::Neg(n) => match **n {
                Node::Num(k) => Some(-k),
                _ => None,
            },
            _ => None,
        };
        Ok(match k {
            Some(k) if k.fract() == 0.0 && k.abs() <= 64.0 => Node::PowI(Box::new(a), k as i32),
            _ => Node::Bin('^', Box::new(a), Box::new(b)),
        })
    }
    fn atom(&mut self) -> Result<Node> {
        match self.peek() {
            None => self.fail("expected a number, a coordinate x0, x1, … or '(' at the end"),
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                if self.peek() != Some(b')') {
                    return self.fail("expected ')'");
                }
                self.i += 1;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit()
                        || self.s[self.i] == b'.'
                        || (matches!(self.s[self.i], b'e' | b'E')
                            && self
                                .s
                                .get(self.i + 1)
                                .is_some_and(|d| d.is_ascii_digit() || *d == b'-')))
                {
                    if matches!(self.s[self.i], b'e' | b'E') {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                match self.text[start..self.i].parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Node::Num(v)),
                    _ => {
                        self.i = start;
                        self.fail("not a number")
                    }
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.i;
                let named = self.names.is_some();
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || (named && self.s[self.i] == b'_'))
                {
                    self.i += 1;
                }
                let word = &self.text[start..self.i];
                let known = self.names.and_then(|n| n.iter().position(|&v| v == word));
                if let Some(k) = known {
                    self.vars = self.vars.max(k + 1);
                    return Ok(Node::Var(k));
                }
                if word == "T" {
                    if self.temperature {
                        return Ok(Node::Temp);
                    }
                    self.i = start;
                    return self.fail(
                        "T, the temperature, may appear in an observable but not in an energy U(x)",
                    );
                }
                if let Some(idx) = word.strip_prefix('x').filter(|d| !d.is_empty() && !named) {
                    return match idx.parse::<usize>() {
                        Ok(k) if k < 1 << 16 => {
                            self.vars = self.vars.max(k + 1);
                            Ok(Node::Var(k))
                        }
                        _ => {
                            self.i = start;
                            self.fail(&format!("{word:?} is not a coordinate (x0, x1, …)"))
                        }
                    };
                }
                if word == "pi" {
                    return Ok(Node::Num(std::f64::consts::PI));
                }
                let f = match word {
                    "exp" => Func::Exp,
                    "log" | "ln" => Func::Log,
                    "sqrt" => Func::Sqrt,
                    "sin" => Func::Sin,
                    "cos" => Func::Cos,
                    _ => {
                        self.i = start;
                        let vars = match self.names {
                            Some([]) => "no observables".to_string(),
                            Some(n) => format!("the observables {}", n.join(", ")),
                            None => "coordinates x0, x1, …".to_string(),
                        };
                        let t = if self.temperature {
                            "; the temperature T; pi"
                        } else {
                            "; pi"
                        };
                        return self.fail(&format!(
                            "unknown name {word:?} ({vars}{t}; functions exp log sqrt sin cos)"
                        ));
                    }
                };
                if self.peek() != Some(b'(') {
                    return self.fail(&format!("expected '(' after {word}"));
                }
                self.i += 1;
                let a = self.expr()?;
                if self.peek() != Some(b')') {
                    return self.fail("expected ')'");
                }
                self.i += 1;
                Ok(Node::Call(f, Box::new(a)))
            }
            Some(c) => self.fail(&format!("unexpected {:?}", c as char)),
        }
    }
}
