//! The PostgreSQL backend: money as NUMERIC, times as TIMESTAMPTZ, one connection owned by a
//! thread of its own, and the fence row read `FOR SHARE` in every write transaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use cryptobot_domain::{
    Candle, ClientOrderId, DailyProfit, Interval, Order, OrderPage, OrderQuery, OrderSize,
    OrderStatus, OrderType, Position, Side, Symbol, TimeInForce, Trade, TradeOrigin, TradePage,
    TradeQuery,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Transaction};
use rust_decimal::Decimal;

use super::{StorageBackend, StoredTrade, add_to_day, check_fence};
use crate::ServiceError;
use crate::trading::ledger::Account;

/// Version of the schema below, kept in `schema_version`; a database with a newer one is refused.
const SCHEMA_VERSION: i32 = 1;

/// How long connecting (at open, and again after a broken connection) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a failed call's connection may take to show it still answers.
const VALID_TIMEOUT: Duration = Duration::from_secs(2);

/// Serializes schema creation of engines opening the same database at once (an arbitrary key of
/// `pg_advisory_xact_lock`, held until the creating transaction ends).
const SCHEMA_LOCK: i64 = 0x6372_7970_746f;

/// Money is NUMERIC without a scale, so a value comes back with the digits it was written with.
/// TIMESTAMPTZ keeps microseconds: each time has a `_ns` column with its nanoseconds within the
/// second, so a stored time is exactly the one acknowledged (idempotent repeats compare it).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    id                 BIGINT PRIMARY KEY,
    symbol             TEXT NOT NULL,
    side               TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    price              NUMERIC NOT NULL,
    quantity           NUMERIC NOT NULL,
    fee                NUMERIC NOT NULL,
    notional           NUMERIC NOT NULL,
    realized_pnl       NUMERIC NOT NULL,
    executed_at        TIMESTAMPTZ NOT NULL,
    executed_at_ns     INTEGER NOT NULL,
    client_order_id    TEXT UNIQUE,
    origin             TEXT NOT NULL,
    request_size_kind  TEXT NOT NULL CHECK (request_size_kind IN ('quantity', 'amount')),
    request_size_value NUMERIC NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_executed_at ON trades (executed_at);
CREATE TABLE IF NOT EXISTS positions (
    symbol          TEXT PRIMARY KEY,
    quantity        NUMERIC NOT NULL,
    avg_entry_price NUMERIC NOT NULL,
    cost_basis      NUMERIC NOT NULL,
    stop_loss       NUMERIC,
    take_profit     NUMERIC
);
CREATE TABLE IF NOT EXISTS orders (
    id                BIGINT PRIMARY KEY,
    client_order_id   TEXT UNIQUE,
    symbol            TEXT NOT NULL,
    side              TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type        TEXT NOT NULL,
    quantity          NUMERIC,
    amount            NUMERIC,
    price             NUMERIC,
    stop_price        NUMERIC,
    time_in_force     TEXT NOT NULL,
    post_only         BOOLEAN NOT NULL,
    status            TEXT NOT NULL,
    reserved_cash     NUMERIC NOT NULL,
    reserved_quantity NUMERIC NOT NULL,
    trade_id          BIGINT,
    reason            TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    created_at_ns     INTEGER NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    updated_at_ns     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_open ON orders (status) WHERE status IN ('new', 'triggered');
CREATE TABLE IF NOT EXISTS candles (
    symbol    TEXT NOT NULL,
    interval  TEXT NOT NULL,
    open_time TIMESTAMPTZ NOT NULL,
    open      NUMERIC NOT NULL,
    high      NUMERIC NOT NULL,
    low       NUMERIC NOT NULL,
    close     NUMERIC NOT NULL,
    volume    NUMERIC NOT NULL,
    PRIMARY KEY (symbol, interval, open_time)
);
CREATE TABLE IF NOT EXISTS account (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    initial_cash NUMERIC NOT NULL,
    cash         NUMERIC NOT NULL,
    realized_pnl NUMERIC NOT NULL,
    fees_paid    NUMERIC NOT NULL,
    trade_count  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS write_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS engine_fence (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO engine_fence (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
";

const ORDER_COLUMNS: &str = "id, client_order_id, symbol, side, order_type, quantity, amount, \
     price, stop_price, time_in_force, post_only, status, reserved_cash, reserved_quantity, \
     trade_id, reason, created_at, created_at_ns, updated_at, updated_at_ns";

const TRADE_COLUMNS: &str = "id, symbol, side, price, quantity, fee, notional, realized_pnl, \
     executed_at, executed_at_ns, client_order_id, origin, request_size_kind, request_size_value";

/// Checks that `url` is a PostgreSQL URL (`postgres://` or `postgresql://`, libpq's form)
/// without connecting.
///
/// # Errors
/// What is wrong with it.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "{url:?} is not a PostgreSQL URL (postgres://user[:password]@host[:port]/database)"
        ));
    }
    url.parse::<postgres::Config>()
        .map(|_| ())
        .map_err(|err| format!("invalid PostgreSQL URL: {err}"))
}

/// Work for the connection thread.
type Job = Box<dyn FnOnce(&mut Link) + Send>;

/// The connection thread's state: the connection, opened when first needed and again after it
/// broke.
struct Link {
    config: postgres::Config,
    client: Option<Client>,
}

impl Link {
    fn client(&mut self) -> Result<&mut Client, ServiceError> {
        if self.client.is_none() {
            let client = self.config.connect(NoTls).map_err(|err| {
                ServiceError::Storage(format!("cannot connect to PostgreSQL: {err}"))
            })?;
            self.client = Some(client);
        }
        // expect: set just above when it was missing.
        Ok(self.client.as_mut().expect("connected"))
    }
}

/// A PostgreSQL database of the paper account (wrap it in [`super::Storage`] to share it).
///
/// One connection serves every call, in order, on a thread of its own: the sync client runs a
/// small runtime of its own, which must not be entered from a tokio worker, and a thread keeps
/// the calls blocking like SQLite's. When the connection breaks, the call fails with
/// [`ServiceError::Storage`] and the next call connects again; a failed call committed nothing.
#[derive(Debug)]
pub struct PostgresStorage {
    jobs: mpsc::Sender<Job>,
    /// The fence epoch this handle acquired, 0 before it did.
    held: Arc<AtomicU64>,
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// libpq's URL form; no TLS) and creates or checks the schema.
    ///
    /// # Errors
    /// [`ServiceError::Storage`] when the URL is malformed, the database cannot be reached
    /// within 5 seconds, or it holds a newer schema.
    pub fn open(url: &str) -> Result<Self, ServiceError> {
        check_url(url).map_err(ServiceError::Storage)?;
        // expect: check_url parsed it just now.
        let mut config: postgres::Config = url.parse().expect("checked URL");
        config.connect_timeout(CONNECT_TIMEOUT);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("postgres-storage".to_owned())
            .spawn(move || {
                let mut link = Link {
                    config,
                    client: None,
                };
                // Ends when the last handle is dropped.
                for job in queue {
                    job(&mut link);
                }
            })
            .map_err(|err| ServiceError::Storage(format!("cannot start a thread: {err}")))?;
        let storage = Self {
            jobs,
            held: Arc::new(AtomicU64::new(0)),
        };
        storage.call(create_schema)?;
        Ok(storage)
    }

    /// Runs `work` on the connection thread and waits for its answer.
    fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |link: &mut Link| {
            let result = link.client().and_then(work);
            if result.is_err()
                && link.client.as_mut().is_some_and(|client| {
                    client.is_closed() || client.is_valid(VALID_TIMEOUT).is_err()
                })
            {
                // Broken (a closed socket is not always noticed at once): the next call
                // connects again.
                link.client = None;
            }
            let _ = reply.send(result);
        });
        let stopped = || ServiceError::Storage("the PostgreSQL connection thread stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Runs `work` in a write transaction that first takes the fence row `FOR SHARE` (so an
    /// [`StorageBackend::acquire_fence`] of another handle waits for it) and checks the epoch.
    fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let held = self.held.load(Ordering::SeqCst);
        self.call(move |client| {
            let mut tx = client.transaction().db()?;
            let current: i64 = tx
                .query_one("SELECT epoch FROM engine_fence WHERE id = 1 FOR SHARE", &[])
                .db()?
                .try_get(0)
                .db()?;
            check_fence(held, u64::try_from(current).unwrap_or(0))?;
            // Dropping the transaction on an error rolls it back.
            let value = work(&mut tx)?;
            tx.commit().db()?;
            Ok(value)
        })
    }

    /// Rows of `sql` read one by one: those `matches` keeps, at most `limit`, and whether
    /// another one followed.
    fn page<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Param>,
        read: fn(&Row) -> Result<T, ServiceError>,
        matches: impl Fn(&T) -> bool + Send + 'static,
        limit: usize,
    ) -> Result<(Vec<T>, bool), ServiceError> {
        self.call(move |client| {
            let mut rows = client
                .query_raw(
                    &sql,
                    params.iter().map(|param| &**param as &(dyn ToSql + Sync)),
                )
                .db()?;
            let mut page = Vec::with_capacity(limit.min(1000));
            while let Some(row) = rows.next().db()? {
                let item = read(&row)?;
                if !matches(&item) {
                    continue;
                }
                if page.len() == limit {
                    return Ok((page, true));
                }
                page.push(item);
            }
            Ok((page, false))
        })
    }

    fn query_trades(
        &self,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Vec<StoredTrade>, ServiceError> {
        self.page(sql, params, read_trade, |_| true, usize::MAX)
            .map(|(trades, _)| trades)
    }

    fn query_orders(&self, sql: String, params: Vec<Param>) -> Result<Vec<Order>, ServiceError> {
        self.page(sql, params, read_order, |_| true, usize::MAX)
            .map(|(orders, _)| orders)
    }
}

/// An owned query parameter (calls move to the connection thread).
type Param = Box<dyn ToSql + Send + Sync>;

fn param(value: impl ToSql + Send + Sync + 'static) -> Param {
    Box::new(value)
}

fn create_schema(client: &mut Client) -> Result<(), ServiceError> {
    let mut tx = client.transaction().db()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .db()?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .db()?
        .try_get(0)
        .db()?;
    if exists {
        let version: Option<i32> = tx
            .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])
            .db()?
            .map(|row| row.try_get(0))
            .transpose()
            .db()?;
        if let Some(version) = version
            && version > SCHEMA_VERSION
        {
            return Err(ServiceError::Storage(format!(
                "database schema version {version} is newer than this program's {SCHEMA_VERSION}"
            )));
        }
    }
    tx.batch_execute(SCHEMA).db()?;
    tx.execute(
        "INSERT INTO schema_version (id, version) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
        &[&SCHEMA_VERSION],
    )
    .db()?;
    tx.commit().db()
}

impl StorageBackend for PostgresStorage {
    fn load_account(&self) -> Result<Option<Account>, ServiceError> {
        self.call(|client| {
            client
                .query_opt(
                    "SELECT initial_cash, cash, realized_pnl, fees_paid, trade_count FROM account \
                     WHERE id = 1",
                    &[],
                )
                .db()?
                .map(|row| {
                    Ok(Account {
                        initial_cash: row.try_get(0).db()?,
                        cash: row.try_get(1).db()?,
                        realized_pnl: row.try_get(2).db()?,
                        fees_paid: row.try_get(3).db()?,
                        trade_count: count(&row, 4)?,
                    })
                })
                .transpose()
        })
    }

    fn init_account(&self, account: &Account) -> Result<(), ServiceError> {
        let account = account.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO account (id, initial_cash, cash, realized_pnl, fees_paid, trade_count) \
                 VALUES (1, $1, $2, $3, $4, $5)",
                &[
                    &account.initial_cash,
                    &account.cash,
                    &account.realized_pnl,
                    &account.fees_paid,
                    &to_i64(account.trade_count)?,
                ],
            )
            .db()?;
            Ok(())
        })
    }

    fn load_positions(&self) -> Result<Vec<Position>, ServiceError> {
        self.call(|client| {
            client
                .query(
                    "SELECT symbol, quantity, avg_entry_price, cost_basis, stop_loss, take_profit \
                     FROM positions ORDER BY symbol",
                    &[],
                )
                .db()?
                .iter()
                .map(|row| {
                    Ok(Position {
                        symbol: parse_symbol(row, 0)?,
                        quantity: row.try_get(1).db()?,
                        avg_entry_price: row.try_get(2).db()?,
                        cost_basis: row.try_get(3).db()?,
                        stop_loss: row.try_get(4).db()?,
                        take_profit: row.try_get(5).db()?,
                    })
                })
                .collect()
        })
    }

    fn load_trades(&self) -> Result<Vec<Trade>, ServiceError> {
        self.query_trades(
            format!("SELECT {TRADE_COLUMNS} FROM trades ORDER BY id"),
            Vec::new(),
        )
        .map(|trades| trades.into_iter().map(|stored| stored.trade).collect())
    }

    fn trades(&self, query: &TradeQuery) -> Result<TradePage, ServiceError> {
        let order = if query.ascending() { "ASC" } else { "DESC" };
        // The time range is pre-filtered a second wide (stored times are microseconds, the
        // nanoseconds apart) and checked exactly by `matches`.
        let sql = format!(
            "SELECT {TRADE_COLUMNS} FROM trades \
             WHERE ($1::text IS NULL OR symbol = $1) AND ($2::text IS NULL OR client_order_id = $2) \
             AND ($3::bigint IS NULL OR id < $3) AND ($4::bigint IS NULL OR id > $4) \
             AND ($5::timestamptz IS NULL OR executed_at >= $5 - interval '1 second') \
             AND ($6::timestamptz IS NULL OR executed_at <= $6 + interval '1 second') \
             ORDER BY id {order}"
        );
        let id = |id: Option<u64>| id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let params = vec![
            param(query.symbol.as_ref().map(|s| s.as_str().to_owned())),
            param(
                query
                    .client_order_id
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
            ),
            param(id(query.before_id)),
            param(id(query.after_id)),
            param(query.from),
            param(query.to),
        ];
        let filter = query.clone();
        let (trades, more) = self.page(
            sql,
            params,
            |row| read_trade(row).map(|stored| stored.trade),
            move |trade| filter.matches(trade),
            query.limit,
        )?;
        Ok(TradePage { trades, more })
    }

    fn find_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<StoredTrade>, ServiceError> {
        self.query_trades(
            format!("SELECT {TRADE_COLUMNS} FROM trades WHERE client_order_id = $1"),
            vec![param(client_order_id.as_str().to_owned())],
        )
        .map(|trades| trades.into_iter().next())
    }

    fn commit_fill(
        &self,
        trade: &Trade,
        size: OrderSize,
        position: Option<&Position>,
        account: &Account,
        order: Option<&Order>,
    ) -> Result<(), ServiceError> {
        let (trade, position, account, order) = (
            trade.clone(),
            position.cloned(),
            account.clone(),
            order.cloned(),
        );
        self.write(move |tx| {
            let (size_kind, size_value) = match size {
                OrderSize::Quantity(value) => ("quantity", value),
                OrderSize::Amount(value) => ("amount", value),
            };
            tx.execute(
                &format!(
                    "INSERT INTO trades ({TRADE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ),
                &[
                    &to_i64(trade.id)?,
                    &trade.symbol.as_str(),
                    &trade.side.as_str(),
                    &trade.price,
                    &trade.quantity,
                    &trade.fee,
                    &trade.notional,
                    &trade.realized_pnl,
                    &trade.executed_at,
                    &nanos(trade.executed_at),
                    &trade.client_order_id.as_ref().map(ClientOrderId::as_str),
                    &trade.origin.as_str(),
                    &size_kind,
                    &size_value,
                ],
            )
            .db()?;
            match &position {
                Some(position) => {
                    tx.execute(
                        "INSERT INTO positions \
                         (symbol, quantity, avg_entry_price, cost_basis, stop_loss, take_profit) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (symbol) DO UPDATE SET quantity = EXCLUDED.quantity, \
                         avg_entry_price = EXCLUDED.avg_entry_price, \
                         cost_basis = EXCLUDED.cost_basis, stop_loss = EXCLUDED.stop_loss, \
                         take_profit = EXCLUDED.take_profit",
                        &[
                            &position.symbol.as_str(),
                            &position.quantity,
                            &position.avg_entry_price,
                            &position.cost_basis,
                            &position.stop_loss,
                            &position.take_profit,
                        ],
                    )
                    .db()?;
                }
                None => {
                    tx.execute(
                        "DELETE FROM positions WHERE symbol = $1",
                        &[&trade.symbol.as_str()],
                    )
                    .db()?;
                }
            }
            let updated = tx
                .execute(
                    "UPDATE account SET cash = $1, realized_pnl = $2, fees_paid = $3, \
                     trade_count = $4 WHERE id = 1",
                    &[
                        &account.cash,
                        &account.realized_pnl,
                        &account.fees_paid,
                        &to_i64(account.trade_count)?,
                    ],
                )
                .db()?;
            if updated != 1 {
                // Returning the error rolls the trade back.
                return Err(ServiceError::Storage("account row is missing".to_owned()));
            }
            if let Some(order) = &order {
                write_order(tx, order)?;
            }
            Ok(())
        })
    }

    fn save_orders(&self, orders: &[Order]) -> Result<(), ServiceError> {
        let orders = orders.to_vec();
        self.write(move |tx| orders.iter().try_for_each(|order| write_order(tx, order)))
    }

    fn load_open_orders(&self) -> Result<Vec<Order>, ServiceError> {
        self.query_orders(
            format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE status IN ('new', 'triggered') \
                 ORDER BY id"
            ),
            Vec::new(),
        )
    }

    fn last_order_id(&self) -> Result<u64, ServiceError> {
        self.call(|client| {
            let id: Option<i64> = client
                .query_one("SELECT MAX(id) FROM orders", &[])
                .db()?
                .try_get(0)
                .db()?;
            Ok(id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
        })
    }

    fn find_order_by_client_order_id(
        &self,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<Order>, ServiceError> {
        self.query_orders(
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE client_order_id = $1"),
            vec![param(client_order_id.as_str().to_owned())],
        )
        .map(|orders| orders.into_iter().next())
    }

    fn find_order(&self, id: u64) -> Result<Option<Order>, ServiceError> {
        // Ids are BIGINT: a larger one (a client's) names no order.
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.query_orders(
            format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
            vec![param(id)],
        )
        .map(|orders| orders.into_iter().next())
    }

    fn orders(&self, query: &OrderQuery) -> Result<OrderPage, ServiceError> {
        let order = if query.ascending() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders \
             WHERE ($1::text IS NULL OR symbol = $1) AND ($2::text IS NULL OR client_order_id = $2) \
             AND ($3::bigint IS NULL OR id < $3) AND ($4::bigint IS NULL OR id > $4) \
             ORDER BY id {order}"
        );
        let id = |id: Option<u64>| id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
        let params = vec![
            param(query.symbol.as_ref().map(|s| s.as_str().to_owned())),
            param(
                query
                    .client_order_id
                    .as_ref()
                    .map(|c| c.as_str().to_owned()),
            ),
            param(id(query.before_id)),
            param(id(query.after_id)),
        ];
        let filter = query.clone();
        let (orders, more) = self.page(
            sql,
            params,
            read_order,
            move |order| filter.matches(order),
            query.limit,
        )?;
        Ok(OrderPage { orders, more })
    }

    fn daily_profit(&self, since: NaiveDate) -> Result<Vec<DailyProfit>, ServiceError> {
        let start = since.and_time(chrono::NaiveTime::MIN).and_utc();
        self.call(move |client| {
            let mut days: BTreeMap<NaiveDate, DailyProfit> = BTreeMap::new();
            let rows = client
                .query(
                    "SELECT executed_at, fee, realized_pnl FROM trades WHERE executed_at >= $1",
                    &[&start],
                )
                .db()?;
            for row in rows {
                let at: DateTime<Utc> = row.try_get(0).db()?;
                add_to_day(
                    &mut days,
                    at.date_naive(),
                    row.try_get(1).db()?,
                    row.try_get(2).db()?,
                );
            }
            Ok(days.into_values().rev().collect())
        })
    }

    fn probe_write(&self, at: DateTime<Utc>) -> Result<(), ServiceError> {
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO write_probe (id, at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                &[&at],
            )
            .db()?;
            Ok(())
        })
    }

    fn save_candles(&self, candles: &[Candle]) -> Result<(), ServiceError> {
        let candles = candles.to_vec();
        self.write(move |tx| {
            for candle in &candles {
                tx.execute(
                    "INSERT INTO candles \
                     (symbol, interval, open_time, open, high, low, close, volume) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (symbol, interval, open_time) DO UPDATE SET \
                     open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, \
                     close = EXCLUDED.close, volume = EXCLUDED.volume",
                    &[
                        &candle.symbol.as_str(),
                        &candle.interval.as_str(),
                        &candle.open_time,
                        &candle.open,
                        &candle.high,
                        &candle.low,
                        &candle.close,
                        &candle.volume,
                    ],
                )
                .db()?;
            }
            Ok(())
        })
    }

    fn load_candles(
        &self,
        symbol: &Symbol,
        interval: Interval,
        end: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Candle>, ServiceError> {
        let symbol = symbol.as_str().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |client| {
            let rows = client
                .query(
                    "SELECT symbol, interval, open_time, open, high, low, close, volume \
                     FROM candles WHERE symbol = $1 AND interval = $2 \
                     AND ($3::timestamptz IS NULL OR open_time < $3) \
                     ORDER BY open_time DESC LIMIT $4",
                    &[&symbol, &interval.as_str(), &end, &limit],
                )
                .db()?;
            let mut candles = rows
                .iter()
                .map(|row| {
                    let name: &str = row.try_get(1).db()?;
                    Ok(Candle {
                        symbol: parse_symbol(row, 0)?,
                        interval: Interval::from_name(name)
                            .ok_or_else(|| bad_value(&format!("interval {name:?}")))?,
                        open_time: row.try_get(2).db()?,
                        open: row.try_get(3).db()?,
                        high: row.try_get(4).db()?,
                        low: row.try_get(5).db()?,
                        close: row.try_get(6).db()?,
                        volume: row.try_get(7).db()?,
                        closed: true,
                    })
                })
                .collect::<Result<Vec<_>, ServiceError>>()?;
            candles.reverse();
            Ok(candles)
        })
    }

    fn save_levels(&self, position: &Position) -> Result<(), ServiceError> {
        let position = position.clone();
        self.write(move |tx| {
            let updated = tx
                .execute(
                    "UPDATE positions SET stop_loss = $2, take_profit = $3 WHERE symbol = $1",
                    &[
                        &position.symbol.as_str(),
                        &position.stop_loss,
                        &position.take_profit,
                    ],
                )
                .db()?;
            if updated == 1 {
                Ok(())
            } else {
                Err(ServiceError::Storage(format!(
                    "position {} is not stored",
                    position.symbol
                )))
            }
        })
    }

    fn load_setting(&self, key: &str) -> Result<Option<String>, ServiceError> {
        let key = key.to_owned();
        self.call(move |client| {
            client
                .query_opt("SELECT value FROM engine_settings WHERE key = $1", &[&key])
                .db()?
                .map(|row| row.try_get(0).db())
                .transpose()
        })
    }

    fn save_setting(&self, key: &str, value: &str) -> Result<(), ServiceError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO engine_settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .db()?;
            Ok(())
        })
    }

    fn acquire_fence(&self) -> Result<u64, ServiceError> {
        let epoch = self.call(|client| {
            // The UPDATE waits for every transaction holding the row FOR SHARE, so the writes
            // of the former epoch have committed (or failed) before it returns.
            let epoch: i64 = client
                .query_one(
                    "UPDATE engine_fence SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
                    &[],
                )
                .db()?
                .try_get(0)
                .db()?;
            u64::try_from(epoch)
                .map_err(|_| ServiceError::Storage(format!("fence epoch {epoch} is negative")))
        })?;
        self.held.store(epoch, Ordering::SeqCst);
        Ok(epoch)
    }

    fn fence_epoch(&self) -> Option<u64> {
        Some(self.held.load(Ordering::SeqCst)).filter(|epoch| *epoch > 0)
    }
}

/// Inserts an order or replaces its stored state.
fn write_order(tx: &mut Transaction<'_>, order: &Order) -> Result<(), ServiceError> {
    tx.execute(
        &format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20) \
             ON CONFLICT (id) DO UPDATE SET client_order_id = EXCLUDED.client_order_id, \
             symbol = EXCLUDED.symbol, side = EXCLUDED.side, order_type = EXCLUDED.order_type, \
             quantity = EXCLUDED.quantity, amount = EXCLUDED.amount, price = EXCLUDED.price, \
             stop_price = EXCLUDED.stop_price, time_in_force = EXCLUDED.time_in_force, \
             post_only = EXCLUDED.post_only, status = EXCLUDED.status, \
             reserved_cash = EXCLUDED.reserved_cash, \
             reserved_quantity = EXCLUDED.reserved_quantity, trade_id = EXCLUDED.trade_id, \
             reason = EXCLUDED.reason, created_at = EXCLUDED.created_at, \
             created_at_ns = EXCLUDED.created_at_ns, updated_at = EXCLUDED.updated_at, \
             updated_at_ns = EXCLUDED.updated_at_ns"
        ),
        &[
            &to_i64(order.id)?,
            &order.client_order_id.as_ref().map(ClientOrderId::as_str),
            &order.symbol.as_str(),
            &order.side.as_str(),
            &order.order_type.as_str(),
            &order.quantity,
            &order.amount,
            &order.price,
            &order.stop_price,
            &order.time_in_force.as_str(),
            &order.post_only,
            &order.status.as_str(),
            &order.reserved_cash,
            &order.reserved_quantity,
            &order.trade_id.map(to_i64).transpose()?,
            &order.reason.as_deref(),
            &order.created_at,
            &nanos(order.created_at),
            &order.updated_at,
            &nanos(order.updated_at),
        ],
    )
    .db()?;
    Ok(())
}

/// Reads one row selected with [`ORDER_COLUMNS`].
fn read_order(row: &Row) -> Result<Order, ServiceError> {
    let name = |column: usize| -> Result<&str, ServiceError> { row.try_get(column).db() };
    let order_type = OrderType::from_name(name(4)?).ok_or_else(|| bad_value("order_type"))?;
    let time_in_force =
        TimeInForce::from_name(name(9)?).ok_or_else(|| bad_value("time_in_force"))?;
    let status = OrderStatus::from_name(name(11)?).ok_or_else(|| bad_value("status"))?;
    let id: i64 = row.try_get(0).db()?;
    let trade_id: Option<i64> = row.try_get(14).db()?;
    Ok(Order {
        id: u64::try_from(id).map_err(|_| bad_value(&format!("order id {id}")))?,
        client_order_id: read_client_order_id(row, 1)?,
        symbol: parse_symbol(row, 2)?,
        side: read_side(row, 3)?,
        order_type,
        quantity: row.try_get(5).db()?,
        amount: row.try_get(6).db()?,
        price: row.try_get(7).db()?,
        stop_price: row.try_get(8).db()?,
        time_in_force,
        post_only: row.try_get(10).db()?,
        status,
        reserved_cash: row.try_get(12).db()?,
        reserved_quantity: row.try_get(13).db()?,
        trade_id: trade_id.and_then(|id| u64::try_from(id).ok()),
        reason: row.try_get(15).db()?,
        created_at: exact_time(row, 16)?,
        updated_at: exact_time(row, 18)?,
    })
}

/// Reads one row selected with [`TRADE_COLUMNS`].
fn read_trade(row: &Row) -> Result<StoredTrade, ServiceError> {
    let origin_name: &str = row.try_get(11).db()?;
    let origin = TradeOrigin::from_name(origin_name)
        .ok_or_else(|| bad_value(&format!("origin {origin_name:?}")))?;
    let size_value: Decimal = row.try_get(13).db()?;
    let size = match row.try_get::<_, &str>(12).db()? {
        "quantity" => OrderSize::Quantity(size_value),
        "amount" => OrderSize::Amount(size_value),
        other => return Err(bad_value(&format!("request_size_kind {other:?}"))),
    };
    let id: i64 = row.try_get(0).db()?;
    let trade = Trade {
        id: u64::try_from(id).map_err(|_| bad_value(&format!("trade id {id}")))?,
        symbol: parse_symbol(row, 1)?,
        side: read_side(row, 2)?,
        price: row.try_get(3).db()?,
        quantity: row.try_get(4).db()?,
        fee: row.try_get(5).db()?,
        notional: row.try_get(6).db()?,
        realized_pnl: row.try_get(7).db()?,
        executed_at: exact_time(row, 8)?,
        client_order_id: read_client_order_id(row, 10)?,
        origin,
    };
    Ok(StoredTrade { trade, size })
}

/// The nanoseconds within the second, kept beside a TIMESTAMPTZ (which keeps microseconds).
fn nanos(time: DateTime<Utc>) -> i32 {
    // At most 1_999_999_999 (a leap second), which fits.
    i32::try_from(time.nanosecond()).unwrap_or(i32::MAX)
}

/// The time in `column` with the nanoseconds of the column after it.
fn exact_time(row: &Row, column: usize) -> Result<DateTime<Utc>, ServiceError> {
    let time: DateTime<Utc> = row.try_get(column).db()?;
    let nanos: i32 = row.try_get(column + 1).db()?;
    u32::try_from(nanos)
        .ok()
        .and_then(|nanos| time.with_nanosecond(nanos))
        .ok_or_else(|| bad_value(&format!("nanoseconds {nanos}")))
}

fn read_side(row: &Row, column: usize) -> Result<Side, ServiceError> {
    match row.try_get::<_, &str>(column).db()? {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(bad_value(&format!("side {other:?}"))),
    }
}

fn read_client_order_id(row: &Row, column: usize) -> Result<Option<ClientOrderId>, ServiceError> {
    row.try_get::<_, Option<&str>>(column)
        .db()?
        .map(ClientOrderId::parse)
        .transpose()
        .map_err(|err| bad_value(&err.to_string()))
}

fn parse_symbol(row: &Row, column: usize) -> Result<Symbol, ServiceError> {
    Symbol::parse(row.try_get(column).db()?).map_err(|err| bad_value(&err.to_string()))
}

fn count(row: &Row, column: usize) -> Result<u64, ServiceError> {
    let value: i64 = row.try_get(column).db()?;
    u64::try_from(value).map_err(|_| bad_value(&format!("count {value}")))
}

fn bad_value(what: &str) -> ServiceError {
    ServiceError::Storage(format!("unreadable stored value: {what}"))
}

fn to_i64(value: u64) -> Result<i64, ServiceError> {
    i64::try_from(value).map_err(|_| ServiceError::Storage(format!("{value} does not fit BIGINT")))
}

/// Turns a database error into [`ServiceError::Storage`]. A private conversion, not a `From`
/// impl: only this module speaks PostgreSQL.
trait OrStorage<T> {
    fn db(self) -> Result<T, ServiceError>;
}

impl<T> OrStorage<T> for Result<T, postgres::Error> {
    fn db(self) -> Result<T, ServiceError> {
        self.map_err(|err| {
            // The server's own message (constraint, type) is more useful than "db error".
            let detail = err
                .as_db_error()
                .map_or_else(|| err.to_string(), |db| db.to_string());
            ServiceError::Storage(detail)
        })
    }
}

#[cfg(test)]
mod tests {
    use cryptobot_domain::fixtures::{dec, instant, symbol, trade};

    use super::super::needs_postgres::TestSchema;
    use super::*;

    #[test]
    fn refuses_a_newer_schema() {
        let Some(schema) = TestSchema::create("refuses_a_newer_schema") else {
            return;
        };
        drop(PostgresStorage::open(&schema.url()).unwrap());
        schema
            .client()
            .batch_execute("UPDATE schema_version SET version = 99")
            .unwrap();
        let err = PostgresStorage::open(&schema.url()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn money_is_numeric_and_times_keep_their_nanoseconds() {
        let Some(schema) = TestSchema::create("money_is_numeric") else {
            return;
        };
        let storage = PostgresStorage::open(&schema.url()).unwrap();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        let mut t = trade(1, "BTCUSDT", "65000.10", "0.00000001");
        t.executed_at = instant() + chrono::TimeDelta::nanoseconds(123_456_789);
        storage
            .commit_trade(
                &t,
                OrderSize::Amount(dec("10.50")),
                None,
                &Account::new(dec("1")),
            )
            .unwrap();
        let mut client = schema.client();
        let row = client
            .query_one(
                "SELECT pg_typeof(price)::text, pg_typeof(executed_at)::text, price::text \
                 FROM trades",
                &[],
            )
            .unwrap();
        let types: (&str, &str, &str) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(types, ("numeric", "timestamp with time zone", "65000.10"));
        assert_eq!(storage.load_trades().unwrap(), [t]);
        assert_eq!(symbol("BTCUSDT"), storage.load_trades().unwrap()[0].symbol);
    }

    #[test]
    fn unreadable_values_are_storage_errors() {
        let Some(schema) = TestSchema::create("pg_unreadable_values") else {
            return;
        };
        let storage = PostgresStorage::open(&schema.url()).unwrap();
        schema
            .client()
            .batch_execute(
                "INSERT INTO account VALUES (1, 10000, 1, 0, 0, -1);
                 INSERT INTO positions VALUES ('btc', 1, 1, 1, NULL, NULL);",
            )
            .unwrap();
        assert!(matches!(
            storage.load_account(),
            Err(ServiceError::Storage(_))
        ));
        assert!(matches!(
            storage.load_positions(),
            Err(ServiceError::Storage(_))
        ));
    }

    #[test]
    fn a_broken_connection_fails_the_call_and_the_next_call_reconnects() {
        let Some(schema) = TestSchema::create("pg_reconnects") else {
            return;
        };
        let storage = PostgresStorage::open(&schema.url()).unwrap();
        storage.init_account(&Account::new(dec("10000"))).unwrap();
        // Ends the storage's session (the test URL names the schema as application_name).
        let mut admin = schema.client();
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&schema.name()],
            )
            .unwrap()
            .get(0);
        assert!(killed >= 1, "the storage's session was not found");
        let t = trade(1, "BTCUSDT", "10", "1");
        let err = storage
            .commit_trade(
                &t,
                OrderSize::Quantity(dec("1")),
                None,
                &Account::new(dec("1")),
            )
            .unwrap_err();
        assert!(matches!(err, ServiceError::Storage(_)), "{err:?}");
        // Nothing of the failed call was written, and the next call works.
        assert!(storage.load_trades().unwrap().is_empty());
        storage
            .commit_trade(
                &t,
                OrderSize::Quantity(dec("1")),
                None,
                &Account::new(dec("1")),
            )
            .unwrap();
        assert_eq!(storage.load_trades().unwrap(), [t]);
    }

    /// Waits (bounded) until `sessions` sessions named `name` wait for a lock.
    fn wait_for_lock_waiters(admin: &mut Client, name: &str, sessions: i64) {
        for _ in 0..500 {
            let waiting: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND wait_event_type = 'Lock'",
                    &[&name],
                )
                .unwrap()
                .get(0);
            if waiting == sessions {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{sessions} sessions of {name} never waited for a lock");
    }

    #[test]
    fn a_writer_inside_its_transaction_commits_before_the_new_epoch_and_never_after() {
        let Some(schema) = TestSchema::create("pg_fence_in_flight") else {
            return;
        };
        let a = Arc::new(PostgresStorage::open(&schema.url()).unwrap());
        let b = Arc::new(PostgresStorage::open(&schema.url()).unwrap());
        let first = a.acquire_fence().unwrap();
        a.init_account(&Account::new(dec("10000"))).unwrap();
        // A third session holds the account row, so A's commit stops inside its transaction,
        // after it took the fence row FOR SHARE.
        let mut blocker = schema.client();
        let mut hold = blocker.transaction().unwrap();
        hold.execute("SELECT 1 FROM account WHERE id = 1 FOR UPDATE", &[])
            .unwrap();
        let writer = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                a.commit_trade(
                    &trade(1, "BTCUSDT", "10", "1"),
                    OrderSize::Quantity(dec("1")),
                    None,
                    &Account::new(dec("1")),
                )
            })
        };
        let mut admin = schema.client();
        wait_for_lock_waiters(&mut admin, schema.name(), 1);
        let taker = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.acquire_fence())
        };
        // B's increment waits for A's share lock on the fence row.
        wait_for_lock_waiters(&mut admin, schema.name(), 2);
        hold.rollback().unwrap();
        // A was inside its transaction before B's epoch: it commits.
        writer.join().unwrap().unwrap();
        assert_eq!(taker.join().unwrap().unwrap(), first + 1);
        assert_eq!(b.load_trades().unwrap().len(), 1);
        // After B's acquire returned, A commits nothing.
        let err = a
            .commit_trade(
                &trade(2, "BTCUSDT", "10", "1"),
                OrderSize::Quantity(dec("1")),
                None,
                &Account::new(dec("1")),
            )
            .unwrap_err();
        assert_eq!(
            err,
            ServiceError::Fenced {
                held: first,
                current: first + 1
            }
        );
        assert_eq!(b.load_trades().unwrap().len(), 1);
    }

    #[test]
    fn a_stream_of_writes_stops_at_the_new_epoch_with_every_acknowledged_one_kept() {
        let Some(schema) = TestSchema::create("pg_fence_stream") else {
            return;
        };
        let a = Arc::new(PostgresStorage::open(&schema.url()).unwrap());
        let b = PostgresStorage::open(&schema.url()).unwrap();
        a.acquire_fence().unwrap();
        a.init_account(&Account::new(dec("10000"))).unwrap();
        let (started, running) = mpsc::channel();
        let writer = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                let mut acknowledged = 0_u64;
                for id in 1..=5000 {
                    let result = a.commit_trade(
                        &trade(id, "BTCUSDT", "10", "1"),
                        OrderSize::Quantity(dec("1")),
                        None,
                        &Account::new(dec("1")),
                    );
                    match result {
                        Ok(()) => acknowledged += 1,
                        Err(ServiceError::Fenced { .. }) => return (acknowledged, true),
                        Err(other) => panic!("{other}"),
                    }
                    if acknowledged == 5 {
                        let _ = started.send(());
                    }
                }
                (acknowledged, false)
            })
        };
        running.recv().unwrap();
        b.acquire_fence().unwrap();
        let at_acquire = b.load_trades().unwrap().len();
        let (acknowledged, fenced) = writer.join().unwrap();
        assert!(fenced, "5000 writes ended before the fence moved");
        // Every write acknowledged is in the table, and none committed after the acquire.
        assert_eq!(usize::try_from(acknowledged).unwrap(), at_acquire);
        assert_eq!(b.load_trades().unwrap().len(), at_acquire);
    }
}
