%% The network workloads ("net" group) in Erlang with gen_tcp, for side-by-side
%% runs with beamlet.net; bench:run/2 hands them here. Same shapes as
%% benchmarks/workloads/{echo_rtt,echo_64,idle_conns,accept_rate}.py.
-module(bench_net).
-export([run/2]).

-define(HOST, {127, 0, 0, 1}).
-define(LISTEN_OPTS(Backlog),
        [binary, {ip, ?HOST}, {active, false}, {reuseaddr, true}, {nodelay, true},
         {backlog, Backlog}]).
-define(CONNECT_OPTS, [binary, {active, false}, {nodelay, true}]).
-define(WARM_TRIPS, 200).
-define(WARM_NS, 500000000).

now_ns() -> erlang:monotonic_time(nanosecond).

%% echo round trips over one connection, 64-byte messages, K busy runaways
run(echo_rtt, [K, N, CapMs]) ->
    [spawn(fun busy/0) || _ <- lists:seq(1, K)],
    {LS, Port} = listen(1024),
    spawn(fun() -> echo_acceptor(LS) end),
    {ok, C} = gen_tcp:connect(?HOST, Port, ?CONNECT_OPTS, 30000),
    Msg = binary:copy(<<"x">>, 64),
    Trip = fun() ->
        T0 = now_ns(),
        ok = gen_tcp:send(C, Msg),
        {ok, _} = gen_tcp:recv(C, 64, 30000),
        now_ns() - T0
    end,
    Start = now_ns(),
    Warm = warm(Trip, K, Start, 0, []),
    Deadline = now_ns() + CapMs * 1000000,
    Steady = lists:reverse(trips(Trip, N, Deadline, [])),
    gen_tcp:close(C),
    Us = fun(Ns) -> Ns / 1000 end,
    [{p50_us, Us(percentile(Steady, 0.5))}, {p99_us, Us(percentile(Steady, 0.99))}]
    ++ [{p99_all_us, Us(percentile(Warm ++ Steady, 0.99))} || K > 0]
    ++ [{note, io_lib:format("time cap: ~b of ~b round trips counted", [length(Steady), N])}
        || length(Steady) < N];

%% Conns connections at once, each echoing Msgs 64-byte messages one by one
run(echo_64, [Conns, Msgs]) ->
    {LS, Port} = listen(1024),
    spawn(fun() -> echo_acceptor(LS) end),
    Self = self(),
    Msg = binary:copy(<<"x">>, 64),
    Clients = [spawn(fun() -> echo_client(Self, Port, Msg, Msgs) end) || _ <- lists:seq(1, Conns)],
    [receive {ready, P} -> ok end || P <- Clients],
    T0 = now_ns(),
    [P ! go || P <- Clients],
    [receive {done, P} -> ok end || P <- Clients],
    T1 = now_ns(),
    [{msgs_per_s, Conns * Msgs / ((T1 - T0) / 1.0e9)}];

%% N idle connections, both ends here: RSS growth / N
run(idle_conns, [N, Clients]) ->
    Need = 2 * N + 200,
    MaxFds = max_fds(erlang:system_info(check_io)),
    case MaxFds < Need of
        true ->
            [{note, io_lib:format("skipped: ~b connections need ~b descriptors, "
                                  "RLIMIT_NOFILE allows ~b", [N, Need, MaxFds])}];
        false ->
            idle_conns(N, Clients)
    end;

%% connections accepted per second: Clients connect-and-close loops, Acceptors
%% acceptors each closing what it accepts
run(accept_rate, [Total, Clients, Acceptors]) ->
    {LS, Port} = listen(4096),
    Self = self(),
    [spawn(fun() -> closing_acceptor(LS, Self) end) || _ <- lists:seq(1, Acceptors)],
    timer:sleep(50),
    T0 = now_ns(),
    [spawn(fun() -> connect_close(Port, Count) end) || Count <- shares(Total, Clients)],
    [receive accepted -> ok end || _ <- lists:seq(1, Total)],
    T1 = now_ns(),
    [{accepts_per_s, Total / ((T1 - T0) / 1.0e9)}].

%% check_io: one proplist, or a list of them (one per poll set)
max_fds([{_, _} | _] = Props) -> proplists:get_value(max_fds, Props);
max_fds([Props | _]) -> max_fds(Props).

listen(Backlog) ->
    {ok, LS} = gen_tcp:listen(0, ?LISTEN_OPTS(Backlog)),
    {ok, Port} = inet:port(LS),
    {LS, Port}.

%% a process per connection, echoing in active mode
echo_acceptor(LS) ->
    case gen_tcp:accept(LS) of
        {ok, S} ->
            Pid = spawn(fun() -> receive go -> ok end, ok = inet:setopts(S, [{active, true}]), echo(S) end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! go,
            echo_acceptor(LS);
        {error, closed} -> ok;
        {error, _} -> echo_acceptor(LS)  % failed before it was accepted
    end.

echo(S) ->
    receive
        {tcp, S, Data} -> ok = gen_tcp:send(S, Data), echo(S);
        {tcp_closed, S} -> ok
    end.

echo_client(Parent, Port, Msg, Msgs) ->
    {ok, C} = gen_tcp:connect(?HOST, Port, ?CONNECT_OPTS, 30000),
    Parent ! {ready, self()},
    receive go -> ok end,
    echo_trips(C, Msg, Msgs),
    gen_tcp:close(C),
    Parent ! {done, self()}.

echo_trips(_, _, 0) -> ok;
echo_trips(C, Msg, N) ->
    ok = gen_tcp:send(C, Msg),
    {ok, _} = gen_tcp:recv(C, 64, 30000),
    echo_trips(C, Msg, N - 1).

warm(Trip, K, Start, Done, Acc) ->
    case Done < ?WARM_TRIPS orelse (K > 0 andalso now_ns() - Start < ?WARM_NS) of
        true -> warm(Trip, K, Start, Done + 1, [Trip() | Acc]);
        false -> Acc
    end.

trips(_, 0, _, Acc) -> Acc;
trips(Trip, N, Deadline, Acc) ->
    D = Trip(),
    case now_ns() > Deadline of
        true -> [D | Acc];
        false -> trips(Trip, N - 1, Deadline, [D | Acc])
    end.

percentile(Values, Q) ->
    Sorted = lists:sort(Values),
    L = length(Sorted),
    lists:nth(min(L, trunc(L * Q) + 1), Sorted).

busy() -> busy(0).
busy(X) -> busy(X + 1).

idle_conns(N, Clients) ->
    {LS, Port} = listen(4096),
    Self = self(),
    [spawn(fun() -> idle_acceptor(LS, Self) end) || _ <- lists:seq(1, 10)],
    timer:sleep(50),
    garbage_collect(),
    R0 = bench_rss(),
    T0 = now_ns(),
    Holders = [spawn(fun() -> hold(Self, Port, Count) end) || Count <- shares(N, Clients)],
    [receive up -> ok end || _ <- lists:seq(1, N)],
    [receive {held, P} -> ok end || P <- Holders],
    T1 = now_ns(),
    timer:sleep(50),  % every server process in its recv
    R1 = bench_rss(),
    [{bytes_per_conn, (R1 - R0) / N}, {us_per_conn, (T1 - T0) / 1000 / N}].

%% a process per connection, blocked in a passive recv
idle_acceptor(LS, Parent) ->
    case gen_tcp:accept(LS) of
        {ok, S} ->
            Pid = spawn(fun() -> receive go -> ok end, Parent ! up, gen_tcp:recv(S, 0) end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! go,
            idle_acceptor(LS, Parent);
        {error, closed} -> ok;
        {error, _} -> idle_acceptor(LS, Parent)  % failed before it was accepted
    end.

hold(Parent, Port, Count) ->
    Held = [element(2, {ok, _} = gen_tcp:connect(?HOST, Port, ?CONNECT_OPTS, 60000))
            || _ <- lists:seq(1, Count)],
    Parent ! {held, self()},
    receive never -> Held end.

closing_acceptor(LS, Parent) ->
    case gen_tcp:accept(LS) of
        {ok, S} ->
            gen_tcp:close(S),
            Parent ! accepted,
            closing_acceptor(LS, Parent);
        {error, closed} -> ok;
        {error, _} -> closing_acceptor(LS, Parent)  % failed before it was accepted
    end.

connect_close(_, 0) -> ok;
connect_close(Port, N) ->
    {ok, S} = gen_tcp:connect(?HOST, Port, ?CONNECT_OPTS, 30000),
    gen_tcp:close(S),
    connect_close(Port, N - 1).

shares(Total, Parts) ->
    [Total div Parts + (case I =< Total rem Parts of true -> 1; false -> 0 end)
     || I <- lists:seq(1, Parts)].

bench_rss() ->
    {ok, Data} = file:read_file("/proc/self/statm"),
    [_, Pages | _] = string:tokens(binary_to_list(Data), " \n"),
    list_to_integer(Pages) * 4096.
