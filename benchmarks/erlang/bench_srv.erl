%% A gen_server and a supervisor for benchmarks/erlang/bench.erl.
-module(bench_srv).
-behaviour(gen_server).
-behaviour(supervisor).
-export([start_link/0, start_crasher/2, start_sup/1]).
-export([init/1, handle_call/3, handle_cast/2]).

start_link() -> gen_server:start_link(?MODULE, echo, []).

start_crasher(Report, I) -> gen_server:start_link(?MODULE, {crasher, Report, I}, []).

start_sup(Children) -> supervisor:start_link(?MODULE, {sup, Children}).

init(echo) -> {ok, echo};
init({crasher, Report, I}) -> Report ! {up, I}, {ok, crasher};
init({sup, Children}) ->
    N = length(Children),
    {ok, {#{strategy => one_for_one, intensity => 10 * N, period => 60}, Children}}.

handle_call(Req, _From, S) -> {reply, Req, S}.
handle_cast(crash, _S) -> error(crash).
