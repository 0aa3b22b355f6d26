// pointstream's GraphiQL page: mounts GraphiQL on #graphiql with a fetcher
// that sends queries and mutations as HTTP POSTs and subscriptions over a
// WebSocket (graphql-transport-ws, through the graphql-ws client).
//
// A separate file rather than an inline script so that the page's
// Content-Security-Policy can forbid inline scripts altogether. The page hands
// its settings over in <script type="application/json"
// id="pointstream-graphiql-config">, which the browser never executes:
//   endpoint          HTTP path of the GraphQL endpoint ("/graphql")
//   subscriptionPath  path of the WebSocket endpoint ("/graphql/ws")
//   defaultQuery      the document a first visit opens on
//   headers           the Headers tab's text to pre-fill, or null
//   introspection     false: the server answers no introspection, so ask none
(function () {
  'use strict';

  var config = JSON.parse(document.getElementById('pointstream-graphiql-config').textContent);

  // Same host and port as the page; wss: when the page came over https:.
  var wsUrl = (window.location.protocol === 'https:' ? 'wss://' : 'ws://') + window.location.host + config.subscriptionPath;

  // The operation GraphiQL is about to run: the named one, else the only one.
  function operationType(documentAST, operationName) {
    if (!documentAST || !Array.isArray(documentAST.definitions)) {
      return null;
    }
    var operations = documentAST.definitions.filter(function (definition) {
      return definition.kind === 'OperationDefinition';
    });
    var chosen = operationName
      ? operations.filter(function (operation) {
          return operation.name && operation.name.value === operationName;
        })[0]
      : operations.length === 1
        ? operations[0]
        : null;
    return chosen ? chosen.operation : null;
  }

  // The Headers tab as string values (GraphiQL hands over whatever JSON was typed).
  function stringHeaders(headers) {
    var out = {};
    Object.keys(headers || {}).forEach(function (name) {
      var value = headers[name];
      if (value !== null && value !== undefined) {
        out[name] = typeof value === 'string' ? value : JSON.stringify(value);
      }
    });
    return out;
  }

  function httpFetch(params, headers) {
    var request = {
      method: 'POST',
      credentials: 'same-origin',
      // The tab's headers come last so that a user may override ours.
      headers: Object.assign(
        { accept: 'application/graphql-response+json, application/json', 'content-type': 'application/json' },
        stringHeaders(headers),
      ),
      body: JSON.stringify(params),
    };
    return fetch(config.endpoint, request).then(function (response) {
      return response.text().then(function (text) {
        try {
          return JSON.parse(text);
        } catch (notJson) {
          // Errors before the schema (a body too large, a proxy) are not JSON.
          return { errors: [{ message: 'HTTP ' + response.status + ': ' + text }] };
        }
      });
    });
  }

  // The server reads the caller of a WebSocket from connection_init's payload,
  // {"Authorization": "Bearer ..."}: the Headers tab goes there, since a browser
  // cannot set headers on a WebSocket handshake.
  function connectionParams(headers) {
    var params = {};
    var all = stringHeaders(headers);
    Object.keys(all).forEach(function (name) {
      params[name.toLowerCase() === 'authorization' ? 'Authorization' : name] = all[name];
    });
    return params;
  }

  // One client (one socket) for the headers it was made with: other headers,
  // another caller, so the next subscription gets a new client.
  var ws = { client: null, key: null };

  function wsClient(headers) {
    var params = connectionParams(headers);
    var key = JSON.stringify(params);
    if (ws.client && ws.key === key) {
      return ws.client;
    }
    if (ws.client) {
      ws.client.dispose();
    }
    ws.key = key;
    ws.client = window.graphqlWs.createClient({
      url: wsUrl,
      connectionParams: params,
      lazy: true,
      // GraphiQL runs one operation at a time: retrying forever after the
      // server went away would only hide that it did.
      retryAttempts: 3,
      // The server closes with 4403 for a missing, bad or expired token and
      // 4401 for a subscribe before the acknowledgement: no retry mends those.
      shouldRetry: function (closed) {
        return !(closed && (closed.code === 4403 || closed.code === 4401));
      },
    });
    return ws.client;
  }

  // What went wrong, as GraphiQL shows errors: a list of {message}.
  function describe(error) {
    if (Array.isArray(error)) {
      return error;
    }
    if (error && typeof error.code === 'number' && 'reason' in error) {
      // A CloseEvent: the socket closed (4403 forbidden, 4400 bad request, ...).
      return [{ message: 'WebSocket closed: ' + error.code + (error.reason ? ' ' + error.reason : '') }];
    }
    if (error instanceof Error) {
      return [{ message: error.message }];
    }
    if (error && error.type === 'error') {
      return [{ message: 'WebSocket error: could not reach ' + wsUrl }];
    }
    return [{ message: String(error) }];
  }

  // An observable GraphiQL subscribes to; unsubscribing (the stop button)
  // sends `complete` to the server at once.
  function subscription(params, headers) {
    return {
      subscribe: function (observer) {
        var dispose = wsClient(headers).subscribe(params, {
          next: function (result) {
            observer.next(result);
          },
          error: function (error) {
            observer.next({ errors: describe(error) });
            observer.complete();
          },
          complete: function () {
            observer.complete();
          },
        });
        return { unsubscribe: dispose };
      },
    };
  }

  function fetcher(params, options) {
    var headers = (options && options.headers) || {};
    if (operationType(options && options.documentAST, params.operationName) === 'subscription') {
      return subscription(params, headers);
    }
    return httpFetch(params, headers);
  }

  var props = {
    fetcher: fetcher,
    defaultQuery: config.defaultQuery,
    isHeadersEditorEnabled: true,
  };
  if (typeof config.headers === 'string') {
    // `headers` wins over what an earlier visit left in localStorage; the
    // same text is the default of every new tab.
    props.headers = config.headers;
    props.defaultHeaders = config.headers;
    props.defaultEditorToolsVisibility = 'headers';
  }
  if (config.introspection === false) {
    // null: no schema and no introspection request, so no "Error fetching schema".
    props.schema = null;
  }

  ReactDOM.createRoot(document.getElementById('graphiql')).render(React.createElement(GraphiQL, props));
})();
