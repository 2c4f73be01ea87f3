%% The benchmark workloads in Erlang, for side-by-side runs with beamlet.
%% Each function prints one JSON line with its metrics; see benchmarks/README.md.
-module(bench).
-export([main/1]).

main([Workload | Args]) ->
    Result = run(list_to_atom(Workload), [list_to_integer(A) || A <- Args]),
    io:format("~s~n", [json(Result)]),
    halt(0).

json(Pairs) ->
    "{" ++ string:join([json_pair(K, V) || {K, V} <- Pairs], ", ") ++ "}".

%% numbers as they are; a string (a note: "note" goes next to the metrics)
json_pair(K, V) when is_list(V) -> io_lib:format("\"~s\": \"~s\"", [K, V]);
json_pair(K, V) -> io_lib:format("\"~s\": ~p", [K, V]).

now_us() -> erlang:monotonic_time(microsecond).
%% (erlang:start_timer with {abs, true} takes monotonic milliseconds)

rss() ->
    {ok, Data} = file:read_file("/proc/self/statm"),
    [_, Pages | _] = string:tokens(binary_to_list(Data), " \n"),
    list_to_integer(Pages) * 4096.

%% spawn N processes that block in receive
run(spawn, [N]) ->
    garbage_collect(),
    R0 = rss(),
    M0 = erlang:memory(processes),
    T0 = now_us(),
    Pids = [spawn(fun() -> receive _ -> ok end end) || _ <- lists:seq(1, N)],
    T1 = now_us(),
    R1 = rss(),
    M1 = erlang:memory(processes),
    [exit(P, kill) || P <- Pids],
    [{us_per_spawn, (T1 - T0) / N}, {bytes_per_proc, (R1 - R0) / N},
     {erlang_memory_bytes_per_proc, (M1 - M0) / N}];

%% a token around a ring of N processes, Rounds times
run(ring, [N, Rounds]) ->
    Self = self(),
    First = lists:foldl(fun(_, Next) -> spawn(fun() -> ring_node(Next) end) end, Self, lists:seq(1, N - 1)),
    T0 = now_us(),
    First ! Rounds,
    ring_main(First),
    T1 = now_us(),
    [{us_per_hop, (T1 - T0) / (N * Rounds)}];

run(pingpong, [N]) ->
    Echo = spawn(fun echo/0),
    T0 = now_us(),
    pingpong(Echo, N),
    T1 = now_us(),
    [{us_per_roundtrip, (T1 - T0) / N}];

run(fanin, [Senders, Each]) ->
    Self = self(),
    T0 = now_us(),
    [spawn(fun() -> [Self ! {msg, I} || I <- lists:seq(1, Each)] end) || _ <- lists:seq(1, Senders)],
    drain(Senders * Each),
    T1 = now_us(),
    [{msgs_per_s, Senders * Each / ((T1 - T0) / 1.0e6)}];

run(selective, [Junk, Calls]) ->
    Server = spawn(fun server/0),
    [self() ! {junk, I} || I <- lists:seq(1, Junk)],
    T0 = now_us(),
    calls(Server, Calls),
    T1 = now_us(),
    [{us_per_call, (T1 - T0) / Calls}];

run(skynet, [Size]) ->
    T0 = now_us(),
    Self = self(),
    spawn(fun() -> skynet(Self, 0, Size, 10) end),
    receive Sum -> Sum end,
    T1 = now_us(),
    [{seconds, (T1 - T0) / 1.0e6}, {sum, Sum}];

%% pinger lateness every 1 ms for Ms milliseconds with K busy runaways
run(lateness, [K, Ms]) ->
    [spawn(fun busy/0) || _ <- lists:seq(1, K)],
    Echo = spawn(fun echo/0),
    timer:sleep(200),
    Late = lateness(Echo, Ms, now_us(), []),
    Sorted = lists:sort(Late),
    L = length(Sorted),
    [{p50_ms, lists:nth(max(1, L div 2), Sorted) / 1000},
     {p99_ms, lists:nth(max(1, (L * 99) div 100), Sorted) / 1000}];

run(gen_call, [N]) ->
    {ok, Pid} = bench_srv:start_link(),
    [gen_server:call(Pid, I) || I <- lists:seq(1, 1000)],
    T0 = now_us(),
    [gen_server:call(Pid, I) || I <- lists:seq(1, N)],
    T1 = now_us(),
    [{us_per_call, (T1 - T0) / N}];

run(restarts, [N]) ->
    Self = self(),
    error_logger:tty(false),
    logger:set_primary_config(level, none),
    Children = [#{id => I, start => {bench_srv, start_crasher, [Self, I]}} || I <- lists:seq(1, N)],
    {ok, Sup} = bench_srv:start_sup(Children),
    [receive {up, _} -> ok end || _ <- lists:seq(1, N)],
    Pids = [P || {_, P, _, _} <- supervisor:which_children(Sup)],
    T0 = now_us(),
    [gen_server:cast(P, crash) || P <- Pids],
    [receive {up, _} -> ok end || _ <- lists:seq(1, N)],
    T1 = now_us(),
    [{restarts_per_s, N / ((T1 - T0) / 1.0e6)}];

%% N send_after timers of an hour to one process: bytes each (erlang:memory),
%% what is left after the process exits, and us to set and cancel one
run(timers, [N]) ->
    Target = spawn(fun() -> receive never -> ok end end),
    garbage_collect(),
    M0 = erlang:memory(total),
    Refs = [erlang:send_after(3600000, Target, x) || _ <- lists:seq(1, N)],
    M1 = erlang:memory(total),
    exit(Target, kill),
    timer:sleep(50),
    garbage_collect(),
    M2 = erlang:memory(total),
    length(Refs),
    Self = self(),
    T0 = now_us(),
    [erlang:cancel_timer(erlang:send_after(3600000, Self, x)) || _ <- lists:seq(1, N)],
    T1 = now_us(),
    [{bytes_per_timer, (M1 - M0) / N}, {held_after_exit_B, max(0, M2 - M0) / N},
     {us_per_set_and_cancel, (T1 - T0) / N}];

run(kill, [K, Rounds]) ->
    [spawn(fun busy/0) || _ <- lists:seq(1, K)],
    Times = [kill_one() || _ <- lists:seq(1, Rounds)],
    Sorted = lists:sort(Times),
    L = length(Sorted),
    [{p50_ms, lists:nth(max(1, L div 2), Sorted) / 1000},
     {p99_ms, lists:nth(max(1, (L * 99) div 100), Sorted) / 1000}];

%% the network workloads (gen_tcp): bench_net.erl
run(Net, Args) ->
    bench_net:run(Net, Args).

ring_node(Next) ->
    receive
        0 -> Next ! 0;
        M -> Next ! M, ring_node(Next)
    end.

ring_main(First) ->
    receive
        M when M =< 0 -> ok;
        M -> First ! M - 1, ring_main(First)
    end.

echo() -> receive {From, M} -> From ! M, echo() end.

pingpong(_, 0) -> ok;
pingpong(Echo, N) -> Echo ! {self(), N}, receive N -> pingpong(Echo, N - 1) end.

drain(0) -> ok;
drain(N) -> receive {msg, _} -> drain(N - 1) end.

server() -> receive {From, Ref, Req} -> From ! {Ref, Req}, server() end.

calls(_, 0) -> ok;
calls(Server, N) ->
    Ref = make_ref(),
    Server ! {self(), Ref, N},
    receive {Ref, _} -> calls(Server, N - 1) end.

skynet(Parent, Num, 1, _) -> Parent ! Num;
skynet(Parent, Num, Size, Div) ->
    Self = self(),
    Child = Size div Div,
    [spawn(fun() -> skynet(Self, Num + I * Child, Child, Div) end) || I <- lists:seq(0, Div - 1)],
    Parent ! sum(Div, 0).

sum(0, Acc) -> Acc;
sum(N, Acc) -> receive S -> sum(N - 1, Acc + S) end.

busy() -> busy(0).
busy(X) -> busy(X + 1).

lateness(_Echo, Left, _Next, Acc) when Left =< 0 -> Acc;
lateness(Echo, Left, Next0, Acc) ->
    %% absolute 1 ms ticks on the monotonic clock (Erlang timers have ms resolution)
    Next = (Next0 div 1000 + 1) * 1000,
    erlang:start_timer(Next div 1000, self(), tick, [{abs, true}]),
    receive {timeout, _, tick} -> ok end,
    Late = now_us() - Next,
    Echo ! {self(), ping},
    receive ping -> ok end,
    lateness(Echo, Left - 1, Next, [Late | Acc]).

kill_one() ->
    Self = self(),
    P = spawn(fun() -> Self ! started, busy() end),
    receive started -> ok end,
    Ref = monitor(process, P),
    T0 = now_us(),
    exit(P, kill),
    receive {'DOWN', Ref, process, P, _} -> ok end,
    now_us() - T0.
